"""Suite-wide settings: strict dtype promotion, no rank promotion, helpers for shared data."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")  # before any test imports keras (jcausal.wrap needs JAX)

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(os.environ.get("JCAUSAL_DATA", REPO.parent / "shared" / "data" / "mnist"))


def mnist_available() -> bool:
    """Whether the shared MNIST test set (IDX, plain or gzipped) is present."""
    return any((SHARED_MNIST / f"t10k-images-idx3-ubyte{e}").is_file() for e in ("", ".gz"))


def require_mnist() -> Path:
    """The shared MNIST test-set folder; skips the calling test (or fixture) with a clear message
    when it is absent."""
    if not mnist_available():
        pytest.skip(f"MNIST IDX files not found in {SHARED_MNIST} (set JCAUSAL_DATA to their folder)")
    return SHARED_MNIST


@pytest.fixture
def mnist_dir() -> Path:
    """The shared MNIST test-set folder; skips the test with a clear message when absent."""
    return require_mnist()


def load_script(relative: str):
    """A repository script (a benchmark, ``notebooks/_build.py``) imported as a module by its path
    relative to the repository root, without needing its folder on ``sys.path``."""
    import importlib.util

    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_only_folder(tmp_path: Path) -> Path:
    """An existing folder this process cannot write in (root ignores chmod: ``/sys`` then); skips
    the test when there is none."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    try:
        (Path("/sys") / ".jcausal-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no read-only folder available to root")
