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


@pytest.fixture
def mnist_dir() -> Path:
    """The shared MNIST test-set folder; skips the test with a clear message when absent."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file() and not (
        SHARED_MNIST / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST IDX files not found in {SHARED_MNIST} (set JCAUSAL_DATA to their folder)")
    return SHARED_MNIST


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
