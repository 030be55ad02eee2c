"""Suite-wide settings: strict dtype promotion, no rank promotion, helpers for shared data."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")  # before any test imports keras (jcausal.wrap needs JAX)

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


def _compilation_cache() -> str:
    """JAX's persistent compilation cache in a folder of this run's own, removed when the run ends:
    a program compiled once is loaded (not compiled) again by later tests, by the other xdist worker
    and by every subprocess a test starts (the CLI, notebooks, killed jobs): the process that loads
    this file first (pytest's main process, before it starts the workers) makes the folder and
    hands it down through the environment (``JAX_COMPILATION_CACHE_DIR``), and removes it at its
    exit. Never a folder shared with another run or left from an earlier one (a cache is speed
    only, and a stale one would hide nothing but could confuse a reader).
    ``JCAUSAL_TEST_JAX_CACHE=0`` turns it off."""
    import atexit
    import shutil
    import tempfile

    folder = os.environ.get("JCAUSAL_TEST_JAX_CACHE_DIR", "")
    if not (folder and os.path.isdir(folder)):  # the first process of this run: it owns the folder
        folder = tempfile.mkdtemp(prefix="jcausal-test-jax-cache-")
        os.environ["JCAUSAL_TEST_JAX_CACHE_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=folder, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder


if os.environ.get("JCAUSAL_TEST_JAX_CACHE", "1") != "0":
    _compilation_cache()


def _compile_effort() -> None:
    """The suite's programs compile at XLA's backend (LLVM) optimization level 1, here and in every
    subprocess a test starts (through ``XLA_FLAGS``, read when the backend starts, after this file).
    Compilation is about 80% of a unit test's time (measured on tests/gce: 109 of 139 s); level 1
    cut that file from 139 s to 109 s with the same results, and ran the MNIST AlexNet global view
    as fast as the default level (27.5 s against 29.6 s); level 0 compiled faster still but ran that
    test 4x slower. The library, the benchmarks and the paper checks keep XLA's defaults.
    ``JCAUSAL_TEST_XLA_OPT=default`` (or an ``XLA_FLAGS`` that sets the level) keeps them here too."""
    flags = os.environ.get("XLA_FLAGS", "")
    chosen = "xla_backend_optimization_level" in flags
    if os.environ.get("JCAUSAL_TEST_XLA_OPT", "") != "default" and not chosen:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=1".strip()


_compile_effort()

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


def trained_once(tmp_path_factory, name: str, train, template):
    """A model trained once per test run, however many xdist workers need it: the first worker to
    ask trains it (``train() -> nnx.Module``) and saves a checkpoint in the run's shared temporary
    folder under a lock; the others wait, then load it into ``template()`` (an untrained module of
    the same configuration). Training is seeded, so every worker gets the model it would have
    trained. Without xdist the model is trained in this process (no folder outlives the run)."""
    import fcntl
    import os as _os

    from jcausal.models import checkpoint

    if not _os.environ.get("PYTEST_XDIST_WORKER"):
        return train()
    root = tmp_path_factory.getbasetemp().parent  # this run's folder, shared by its workers
    path = root / f"{name}.msgpack"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on failure
        if path.is_file():
            return checkpoint.load(path, template())
        model = train()
        checkpoint.save(path, model)
        return model


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


_HOLD_LOCK = '''
import contextlib, os, sys, time
import jcausal._src.io as io
real, go = io.output_lock, sys.argv[1]
@contextlib.contextmanager
def held(*args, **kwargs):  # the real lock, kept until the test creates the file `go`
    with real(*args, **kwargs) as folder:
        deadline = time.monotonic() + 300
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield folder
io.output_lock = held
from jcausal.cli import main
sys.exit(main(sys.argv[2:]))
'''


def jcausal_holding_lock(argv: list[str], go: Path, env: dict):
    """``jcausal *argv`` in a subprocess that, once it holds its output folder's lock, keeps it until
    the file ``go`` exists (then runs on as usual): a run in its locked phase for as long as a test
    needs, whatever the machine's speed (a fast run used to finish before its rival started). A
    process that never gets the lock is refused at once, as usual. Returns the ``Popen``."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(go), *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lock(folder: Path, proc, timeout: float = 300.0) -> None:
    """Wait until ``proc`` holds the output lock of ``folder`` (its pid in the lock file)."""
    import time

    lock, deadline = folder / ".jcausal" / "lock", time.monotonic() + timeout
    while not (lock.is_file() and lock.read_text().strip() == str(proc.pid)):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never took its output lock"
        time.sleep(0.01)
