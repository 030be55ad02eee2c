"""Resumable batch jobs: a SIGKILL mid-way, a rerun that computes nothing twice and a result
bit-identical to an uninterrupted run; another job's folder refused; 4 fake devices and 2 localhost
processes identical to 1 device."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from jcausal.ace import load_result
from tests.conftest import REPO

JOB = textwrap.dedent("""
    import sys, jax, numpy as np
    from flax import nnx
    from jcausal.ace.jobs import run_job
    from jcausal.models import MLP, split_functional
    out = sys.argv[1]
    split, params = split_functional(MLP((24, 128, 128, 3), activation="tanh", rngs=nnx.Rngs(0)))
    X = np.random.default_rng(0).normal(size=(3000, 24)).astype(np.float32)
    run_job(split.then(jax.nn.softmax), X, out, params=params, num_alphas=8, max_order=3,
            chunk_features=1, progress=False, record={"model": "test:mlp"})
    print("JOB-DONE")
""")


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)


@pytest.mark.slow  # three job processes (15 s); the in-process kills below stay fast
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    ref_dir, job_dir = tmp_path / "ref", tmp_path / "job"
    ref = subprocess.run([sys.executable, "-c", JOB, str(ref_dir)], env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(job_dir)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    chunks = job_dir / "chunks"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(chunks.glob("chunk_*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in chunks.glob("chunk_*.npz")}
    assert 3 <= len(before) < 24, before  # killed mid-way
    assert not (job_dir / "ace.npz").exists()
    again = subprocess.run([sys.executable, "-c", JOB, str(job_dir)], env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    meta = json.loads((job_dir / "ace.json").read_text())
    finished_before = {int(n[6:11]) for n in before}
    assert not finished_before & set(meta["computed_this_run"])  # nothing computed twice
    assert len(meta["computed_this_run"]) == 24 - len(before)
    for name, mtime in before.items():
        assert (chunks / name).stat().st_mtime_ns == mtime
    a, b = load_result(ref_dir / "ace.npz"), load_result(job_dir / "ace.npz")
    np.testing.assert_array_equal(a.expectations, b.expectations)
    np.testing.assert_array_equal(a.regressor.coef, b.regressor.coef)
    np.testing.assert_array_equal(a.baselines, b.baselines)


def test_another_jobs_folder_is_refused(tmp_path):
    import jax.numpy as jnp

    from jcausal.ace.jobs import JobError, run_job

    X = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    W = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3)), jnp.float32)
    run_job(lambda W, x: jnp.tanh(W @ x), X, tmp_path, params=W, num_alphas=6, max_order=2, progress=False)
    with pytest.raises(FileExistsError, match="another job"):
        run_job(lambda W, x: jnp.tanh(W @ x), X, tmp_path, params=W * 2, num_alphas=6, max_order=2,
                progress=False)
    res = run_job(lambda W, x: jnp.tanh(W @ x), X, tmp_path, params=W * 2, num_alphas=6, max_order=2,
                  progress=False, overwrite=True)
    assert res.expectations.shape == (3, 6, 2)

    def bad(W, x):
        return jnp.log(x[:2] - 100.0)  # NaN everywhere: the chunk fails, named

    with pytest.raises(JobError, match="chunk 0"):
        run_job(bad, X, tmp_path / "bad", params=W, num_alphas=6, max_order=2, progress=False)


MULTI = textwrap.dedent("""
    import os, sys
    n_dev = int(sys.argv[2])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_dev}"
    import jax, numpy as np
    distributed = len(sys.argv) > 3
    if distributed:
        jax.distributed.initialize(coordinator_address=sys.argv[3], num_processes=int(sys.argv[4]),
                                   process_id=int(sys.argv[5]))
    from flax import nnx
    from jcausal.ace.jobs import run_job
    from jcausal.models import MLP, split_functional
    split, params = split_functional(MLP((10, 32, 3), activation="tanh", rngs=nnx.Rngs(0)))
    X = np.random.default_rng(0).normal(size=(300, 10)).astype(np.float32)
    run_job(split.then(jax.nn.softmax), X, sys.argv[1], params=params, num_alphas=6, max_order=3,
            chunk_features=2, progress=False, distributed=distributed, record={"model": "test:multi"},
            wait_timeout=300)
    print("OK", jax.process_index(), len(jax.devices()))
""")


@pytest.mark.slow  # four job processes (22 s); sharding on 4 fake devices in-process stays fast
def test_four_devices_and_two_processes_match_one_device(tmp_path):
    import socket

    one = subprocess.run([sys.executable, "-c", MULTI, str(tmp_path / "one"), "1"], env=_env(),
                         capture_output=True, text=True, timeout=600)
    four = subprocess.run([sys.executable, "-c", MULTI, str(tmp_path / "four"), "4"], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and four.returncode == 0, (one.stderr[-1500:], four.stderr[-1500:])
    assert "OK 0 4" in four.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-c", MULTI, str(tmp_path / "two"), "1", addr, "2", str(i)],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    a = load_result(tmp_path / "one" / "ace.npz")
    for other in ("four", "two"):
        b = load_result(tmp_path / other / "ace.npz")
        np.testing.assert_array_equal(a.expectations, b.expectations, err_msg=other)
    meta = json.loads((tmp_path / "two" / "ace.json").read_text())
    assert meta["processes"] == 2


def test_load_model_and_rows_bad_input(tmp_path, monkeypatch):
    from jcausal.ace.jobs import load_model, load_rows
    from jcausal.data.idx import write_idx

    (tmp_path / "usermod.py").write_text(textwrap.dedent("""
        import jax
        import jax.numpy as jnp
        def good():
            return (lambda W, x: jnp.tanh(W @ x)), jnp.ones((2, 3))
        def wrong():
            return 3
        def boom():
            raise RuntimeError("no weights")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    x = np.ones(3, np.float32)
    w = load_model("usermod:good", x)
    np.testing.assert_allclose(w(x), np.tanh(np.full(2, 3.0)), rtol=1e-6)
    assert w.output == "raw" and w.split is not None  # the contract found the affine first layer
    for spec, match in [("usermod", "module:function"), ("nosuchmod:f", "cannot import"),
                        ("usermod:missing", "no callable"), ("usermod:wrong", r"\(model, params\)"),
                        ("usermod:boom", "no weights"), ("usermod:good", r"shape \(4,\)")]:
        with pytest.raises(ValueError, match=match):
            load_model(spec, np.ones(4 if match.startswith("shape") else 3, np.float32))
    X = np.random.default_rng(0).uniform(size=(5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "x.npz", X=X, y=np.zeros(5))
    np.testing.assert_array_equal(load_rows(tmp_path / "x.npy"), X)
    np.testing.assert_array_equal(load_rows(tmp_path / "x.npz"), X)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", (X.reshape(5, 2, 2) * 255).astype(np.uint8))
    assert load_rows(tmp_path).shape == (5, 4)
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(ValueError, match="2-d"):
        load_rows(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError):
        load_rows(tmp_path / "missing.npy")


def test_load_model_from_nnx_checkpoint(tmp_path):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jcausal.ace.jobs import load_model
    from jcausal.models import MLP, Split, save

    m = MLP((5, 7, 3), activation="tanh", rngs=nnx.Rngs(3))
    save(tmp_path / "m.msgpack", m)
    x = jnp.linspace(0, 1, 5)
    w = load_model("jcausal.models:MLP", x, tmp_path / "m.msgpack")
    assert isinstance(w.split, Split) and w.output == "probabilities"
    # class probabilities, as `jcausal ace file` computes for the same checkpoint (issue 21, item 4),
    # by the whole model and by its eqn-2 split
    np.testing.assert_allclose(w(x), jax.nn.softmax(m(x)), rtol=1e-6)
    s, p = w.split, w.params
    np.testing.assert_allclose(s.rest(p, s.first(p, x)), jax.nn.softmax(m(x)), rtol=1e-6)
    with jax.enable_x64(True):  # --x64: the parameters take the example's float64
        w64 = load_model("jcausal.models:MLP", np.linspace(0, 1, 5), tmp_path / "m.msgpack")
        assert {a.dtype for a in jax.tree.leaves(w64.params)} == {jnp.dtype("float64")}
        np.testing.assert_allclose(w64(np.linspace(0, 1, 5)), jax.nn.softmax(m(x)), rtol=1e-6)
    with pytest.raises(ValueError, match="not a Flax NNX Module"):
        load_model("jcausal.ace.jobs:run_job", x, tmp_path / "m.msgpack")
    from jcausal.models import GCECNN

    save(tmp_path / "c.msgpack", GCECNN(4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="holds a GCECNN"):
        load_model("jcausal.models:MLP", x, tmp_path / "c.msgpack")


# ------------------------------------------------------------- kill safety of overwrite=True


class _FaultyOS:
    """The ``os`` module as ``jcausal._src.io`` and ``jcausal.ace.jobs`` see it, where file operation
    number ``at`` raises ``exc`` (a kill just before it) and so does every later one: a dead process
    does nothing more, so ``atomic_write_bytes`` cannot remove its temporary file either."""

    OPS = ("open", "replace", "rename", "unlink", "remove", "rmdir", "fsync", "fchmod", "link", "symlink")

    def __init__(self):
        self.count, self.at, self.exc, self.log = 0, None, None, []

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.OPS:
            return real

        def op(*args, **kwargs):
            self.count += 1
            if self.at is not None and self.count >= self.at:
                raise self.exc()
            self.log.append((name, str(args[0])))
            return real(*args, **kwargs)

        return op


class _FaultyShutil:
    def __init__(self, fos):
        self.fos = fos

    def __getattr__(self, name):
        return getattr(__import__("shutil"), name)

    def rmtree(self, path, ignore_errors=False):  # file by file, so a kill can fall between two
        for root, dirs, files in os.walk(path, topdown=False):
            for f in files:
                self.fos.unlink(os.path.join(root, f))
            for d in dirs:
                self.fos.rmdir(os.path.join(root, d))
        self.fos.rmdir(path)


def _eqn2_reference(W, X, alphas):
    """float64 eqn 2 of tanh(W x): the mean over the rows of X with feature i set to alpha."""
    W, X = np.asarray(W, np.float64), np.asarray(X, np.float64)
    E = np.empty((X.shape[1], alphas.shape[1], W.shape[0]))
    for i in range(X.shape[1]):
        for a, v in enumerate(np.asarray(alphas[i], np.float64)):
            Xi = X.copy()
            Xi[:, i] = v
            E[i, a] = np.tanh(Xi @ W.T).mean(0)
    return E


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)))
               for f in ("features", "alphas", "expectations", "baselines"))


def _state(folder, old, new, new_job):
    """What a kill left in ``folder``: 'old result', 'new state' or 'nothing'; fails on a mix."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else None
    is_new = manifest is not None and manifest["job"] == new_job
    try:
        got = load_result(folder / "ace.npz")
    except FileNotFoundError:
        got = None
    if got is not None:
        assert _same(got, new) or _same(got, old), "ace.npz is neither result"
        if _same(got, old):
            assert not is_new, "the old result beside the new job's manifest"
            return "old result"
        assert is_new, "the new result without the new job's manifest"
    if (folder / "ace.json").exists():
        meta_job = json.loads((folder / "ace.json").read_text())["job"]
        assert (meta_job == new_job) == is_new, "ace.json of another job than the manifest's"
        assert not is_new or (got is not None and _same(got, new))
    return "new state" if is_new else "nothing"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_overwrite_killed_at_every_file_operation(tmp_path, monkeypatch, exc):
    """overwrite=True replacing a finished job, killed before each file operation in turn: the folder
    always loads as the old result, the new job's resumable state, or nothing; resuming gives the
    new job's numbers (float64 eqn 2) and leaves no temporary file."""
    import shutil

    import jax.numpy as jnp

    import jcausal._src.io as jio
    import jcausal.ace.jobs as jobs

    X = np.random.default_rng(3).normal(size=(30, 3)).astype(np.float32)
    W_old = jnp.asarray(np.random.default_rng(4).normal(size=(2, 3)), jnp.float32)
    W_new = 0.5 * W_old

    def f(W, x):
        return jnp.tanh(W @ x)

    kw = dict(num_alphas=6, max_order=2, chunk_features=1, progress=False)
    old = jobs.run_job(f, X, tmp_path / "old", params=W_old, **kw)
    new = jobs.run_job(f, X, tmp_path / "new", params=W_new, **kw)
    new_job = json.loads((tmp_path / "new" / "manifest.json").read_text())["job"]
    ref = _eqn2_reference(W_new, X, np.asarray(new.alphas))
    np.testing.assert_allclose(np.asarray(new.expectations), ref, rtol=1e-5, atol=1e-6)
    fos = _FaultyOS()
    monkeypatch.setattr(jio, "os", fos)
    monkeypatch.setattr(jobs, "os", fos)
    monkeypatch.setattr(jobs, "shutil", _FaultyShutil(fos))
    work = tmp_path / "work"
    shutil.copytree(tmp_path / "old", work)
    fos.count = 0
    jobs.run_job(f, X, work, params=W_new, overwrite=True, **kw)  # uninterrupted: count the operations
    total, ops = fos.count, list(fos.log)
    assert total >= 20, ops
    seen = set()
    for at in range(1, total + 1):
        shutil.rmtree(work)
        fos.at = None
        shutil.copytree(tmp_path / "old", work)
        fos.count, fos.at, fos.exc = 0, at, exc
        with pytest.raises(exc):
            jobs.run_job(f, X, work, params=W_new, overwrite=True, **kw)
        fos.at = None
        seen.add(_state(work, old, new, new_job))
        res = jobs.run_job(f, X, work, params=W_new, overwrite=True, **kw)
        assert _same(res, new) and _same(load_result(work / "ace.npz"), new), at
        assert not list(work.rglob("*.tmp")), (at, ops[at - 1], list(work.rglob("*.tmp")))
        assert json.loads((work / "manifest.json").read_text()).get("complete") is True
    assert seen == {"old result", "nothing", "new state"}, seen  # every kind of state was reached


OVERWRITE = textwrap.dedent("""
    import sys, jax, numpy as np
    from flax import nnx
    from jcausal.ace.jobs import run_job
    from jcausal.models import MLP, split_functional
    out, which = sys.argv[1], sys.argv[2]
    seed, rows = (0, 3000) if which == "new" else (1, 200)
    split, params = split_functional(MLP((24, 128, 128, 3), activation="tanh", rngs=nnx.Rngs(seed)))
    X = np.random.default_rng(seed).normal(size=(rows, 24)).astype(np.float32)
    run_job(split.then(jax.nn.softmax), X, out, params=params, num_alphas=8, max_order=3,
            chunk_features=1, progress=False, record={"model": "test:" + which}, overwrite=True)
""")


@pytest.mark.slow  # four job processes (17 s); the in-process kills above stay fast
def test_sigkill_during_overwrite_leaves_no_old_result_and_resumes(tmp_path):
    """A job replacing a finished one (overwrite=True) SIGKILLed after some chunks: the old ace.npz
    and ace.json are gone (they stayed beside the new manifest), the new job resumes to the
    numbers of an uninterrupted run, and the killed writers' temporary files are removed (ours
    only, of dead processes only)."""
    job_dir, ref_dir = tmp_path / "job", tmp_path / "ref"

    def run(folder, which):
        r = subprocess.run([sys.executable, "-c", OVERWRITE, str(folder), which], env=_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]

    run(job_dir, "old")
    old_job = json.loads((job_dir / "manifest.json").read_text())["job"]
    old = load_result(job_dir / "ace.npz")
    run(ref_dir, "new")
    new_job = json.loads((ref_dir / "manifest.json").read_text())["job"]
    assert new_job != old_job
    proc = subprocess.Popen([sys.executable, "-c", OVERWRITE, str(job_dir), "new"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        status = __import__("jcausal.ace.jobs", fromlist=["job_status"]).job_status(job_dir)
        if status is not None and status["job"] == new_job and len(status["done"]) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    manifest = json.loads((job_dir / "manifest.json").read_text())
    assert manifest["job"] == new_job and not manifest.get("complete")
    before = sorted(p.name for p in (job_dir / "chunks").glob("chunk_*.npz"))
    assert 2 <= len(before) < 24, before
    assert not (job_dir / "ace.json").exists()
    with pytest.raises(FileNotFoundError):
        load_result(job_dir / "ace.npz")  # not the old result under the new job's manifest
    dead = proc.pid
    stale = [job_dir / f".manifest.json.{dead}.0123456789ab.tmp",
             job_dir / f".ace.npz.{dead}.00000000beef.tmp",
             job_dir / "chunks" / f".chunk_00023.npz.{dead}.abcdef012345.tmp"]
    kept = [job_dir / ".manifest.json.1.0123456789ab.tmp",  # pid 1 is alive: a live writer's
            job_dir / f".notes.txt.{dead}.0123456789ab.tmp",  # not a file of ours
            job_dir / "chunks" / f".chunk_00023.npz.{dead}.xyz.tmp",  # not our pattern
            job_dir / "mine.tmp"]
    for p in stale + kept:
        p.write_bytes(b"partial")
    run(job_dir, "new")
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    meta = json.loads((job_dir / "ace.json").read_text())
    assert meta["job"] == new_job
    assert not {int(n[6:11]) for n in before} & set(meta["computed_this_run"])
    a, b = load_result(ref_dir / "ace.npz"), load_result(job_dir / "ace.npz")
    np.testing.assert_array_equal(a.expectations, b.expectations)
    np.testing.assert_array_equal(a.baselines, b.baselines)
    assert not np.array_equal(np.asarray(old.expectations)[:, :, 0], np.asarray(b.expectations)[:, :, 0])


def test_result_without_manifest_is_refused_then_replaced(tmp_path):
    """A folder with an ace.npz but no manifest (e.g. left by a kill during an overwrite): the new
    job's manifest and chunks went beside it, so it loaded as the new job's result until the end."""
    import jax.numpy as jnp

    from jcausal.ace import save_result
    from jcausal.ace.jobs import run_job

    X = np.random.default_rng(5).normal(size=(30, 3)).astype(np.float32)
    W = jnp.asarray(np.random.default_rng(6).normal(size=(2, 3)), jnp.float32)
    kw = dict(num_alphas=6, max_order=2, progress=False)
    other = run_job(lambda W, x: jnp.tanh(W @ x), X, tmp_path / "other", params=2.0 * W, **kw)
    save_result(tmp_path / "job" / "ace.npz", other)
    with pytest.raises(FileExistsError, match=r"holds a result \(ace.npz\) with no job manifest"):
        run_job(lambda W, x: jnp.tanh(W @ x), X, tmp_path / "job", params=W, **kw)
    assert not (tmp_path / "job" / "manifest.json").exists()  # refused before writing anything
    res = run_job(lambda W, x: jnp.tanh(W @ x), X, tmp_path / "job", params=W, overwrite=True, **kw)
    ref = _eqn2_reference(W, X, np.asarray(res.alphas))
    np.testing.assert_allclose(np.asarray(load_result(tmp_path / "job" / "ace.npz").expectations), ref,
                               rtol=1e-5, atol=1e-6)


def test_job_status_while_chunks_are_being_removed(tmp_path, monkeypatch):
    """A chunk removed between the listing and the read (an overwrite running beside `ace status`)
    raised FileNotFoundError; it is a chunk not done."""
    import jax.numpy as jnp

    import jcausal.ace.jobs as jobs

    X = np.random.default_rng(7).normal(size=(30, 3)).astype(np.float32)
    jobs.run_job(lambda W, x: jnp.tanh(W @ x), X, tmp_path, params=jnp.ones((2, 3)), num_alphas=6,
                 max_order=2, chunk_features=1, progress=False)
    real = jobs.read_npz_arrays

    def vanishing(path, required=()):
        if path.name == "chunk_00001.npz":
            os.unlink(path)
        return real(path, required)

    monkeypatch.setattr(jobs, "read_npz_arrays", vanishing)
    assert jobs.job_status(tmp_path)["done"] == [0, 2]


def test_run_job_and_explain_are_one_pipeline(tmp_path):
    """Every option reaches both: the reference point and the Bayes factor too (issue 23 item 3)."""
    import jax
    import jax.numpy as jnp

    from jcausal.ace import Execution, explain
    from jcausal.ace import estimators as E
    from jcausal.ace.jobs import run_job

    X = np.random.default_rng(4).uniform(-1, 1, size=(120, 3)).astype(np.float32)
    W = jnp.asarray(np.random.default_rng(5).normal(size=(2, 3)), jnp.float32)

    def f(W, x):
        return jnp.tanh(W @ x)

    kw = dict(num_alphas=7, max_order=3, reference_at=0.25, bayes_factor=20.0,
              method=E.Definition(num_rows=100, key=jax.random.key(2)), run=Execution(batch_size=4))
    job = run_job(f, X, tmp_path, params=W, chunk_features=2, progress=False, **kw)
    one = explain(f, X, params=W, **kw)
    np.testing.assert_allclose(job.expectations, one.expectations, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(job.orders, one.orders)
    np.testing.assert_allclose(job.baselines, one.baselines, rtol=1e-5, atol=1e-6)
    # the reference is the regressor at reference_at, not the uniform average
    mean, _ = one.predict(np.full((3, 1), 0.25, np.float32))
    np.testing.assert_allclose(one.baselines, mean[:, 0, :], rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "manifest.json").read_text())["settings"]["bayes_factor"] == 20.0


def test_an_edited_or_swapped_chunk_is_refused_naming_the_file(tmp_path):
    """Issue 32: a chunk edited by hand (``expectations + 1``, same job id) was used as is, and two
    swapped chunk files permuted the features' curves silently. Each chunk now records its position,
    features and a checksum of its arrays, verified on every read; the untouched job is unaffected
    and a deleted bad chunk is computed again, giving the uninterrupted result bit for bit."""
    import io

    import jax.numpy as jnp

    from jcausal._src.io import read_npz_arrays
    from jcausal.ace.jobs import JobError, job_status, run_job

    X = np.random.default_rng(5).normal(size=(30, 4)).astype(np.float32)
    W = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4)), jnp.float32)
    kw = dict(params=W, num_alphas=6, max_order=2, chunk_features=2, progress=False)

    def f(W, x):
        return jnp.tanh(W @ x)

    out = tmp_path / "job"
    ref = run_job(f, X, out, **kw)
    c0, c1 = out / "chunks" / "chunk_00000.npz", out / "chunks" / "chunk_00001.npz"
    good0, good1 = c0.read_bytes(), c1.read_bytes()
    (out / "ace.npz").unlink()  # the result must be assembled from the chunks again
    (out / "ace.json").unlink()

    edited = read_npz_arrays(c0)
    edited["expectations"] = edited["expectations"] + 1.0
    buf = io.BytesIO()
    np.savez(buf, **edited)
    c0.write_bytes(buf.getvalue())
    with pytest.raises(JobError, match=r"chunk_00000\.npz is not chunk 0 of this job: its checksum does not "
                                       r"match its arrays"):
        run_job(f, X, out, **kw)
    with pytest.raises(JobError, match="chunk_00000.npz"):
        job_status(out)

    c0.write_bytes(good1)  # swapped
    c1.write_bytes(good0)
    swapped = (r"chunk_00000\.npz is not chunk 0 of this job: it is chunk 1 of the job, not chunk 0 \(a "
               r"swapped file\); it holds features \[2, 3\], not this chunk's \[0, 1\]")
    with pytest.raises(JobError, match=swapped):
        run_job(f, X, out, **kw)
    c0.unlink()
    c1.write_bytes(good1)
    res = run_job(f, X, out, **kw)  # the deleted chunk is computed again
    np.testing.assert_array_equal(res.expectations, ref.expectations)
    assert json.loads((out / "ace.json").read_text())["computed_this_run"] == [0]


def test_another_job_is_refused_naming_what_differs(tmp_path):
    """Issue 32: a rerun of ``ace run --x64`` without ``--x64`` was refused as "another job" without
    saying why, and ``ace.json`` did not record float64. The job's identity is recorded (dtype
    included) and a refusal names the parts that differ."""
    import jax
    import jax.numpy as jnp

    from jcausal.ace.jobs import run_job

    X = np.random.default_rng(5).normal(size=(30, 3)).astype(np.float32)
    W = jnp.asarray(np.random.default_rng(6).normal(size=(2, 3)), jnp.float32)
    kw = dict(num_alphas=6, max_order=2, progress=False, record={"model": "m:f"})

    def f(W, x):
        return jnp.tanh(W @ x)

    with jax.enable_x64(True):
        run_job(f, X.astype(np.float64), tmp_path, params=W.astype(jnp.float64), **kw)
    assert json.loads((tmp_path / "ace.json").read_text())["identity"]["dtype"] == "float64"
    x64 = r"it differs in .*dtype \(--x64\) \(float64 there, float32 now\)"
    with pytest.raises(FileExistsError, match=x64):
        run_job(f, X, tmp_path, params=W, **kw)
    order = r"it differs in .*max_order \(2 there, 3 now\)"
    with jax.enable_x64(True), pytest.raises(FileExistsError, match=order):
        run_job(f, X.astype(np.float64), tmp_path, params=W.astype(jnp.float64), **{**kw, "max_order": 3})


def test_a_chunks_path_that_is_a_file_or_a_chunk_that_is_a_folder_is_named(tmp_path):
    """Issue 32: a ``chunks`` path that is a file gave "[Errno 17] File exists", and a chunk path
    that is a folder named the temporary file of the failed write."""
    import jax.numpy as jnp

    from jcausal.ace.jobs import JobError, run_job

    X = np.random.default_rng(5).normal(size=(20, 2)).astype(np.float32)
    kw = dict(params=jnp.ones(2, jnp.float32), num_alphas=4, max_order=1, chunk_features=1, progress=False)

    def f(w, x):
        return jnp.tanh(w * x)

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "chunks").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"chunks is a file; a job keeps its chunks in a folder"):
        run_job(f, X, tmp_path / "a", **kw)
    (tmp_path / "b" / "chunks" / "chunk_00001.npz").mkdir(parents=True)
    with pytest.raises(JobError, match=r"chunk_00001\.npz is a folder where the job writes its chunk 1"):
        run_job(f, X, tmp_path / "b", **kw)


def test_untrusted_checkpoint_metadata_is_checked_before_anything_is_built(tmp_path):
    """Issue 32: a checkpoint whose record claimed sizes [4, 60000, 60000, 3] had the MLP built from
    it before its state was compared: XLA aborted the process (exit 134). The implied shapes are now
    compared on an abstract module first, and the mismatch is refused by name."""
    import json as _json

    from flax import nnx, serialization

    from jcausal.ace.jobs import load_model
    from jcausal.models import MLP, save

    path = tmp_path / "m.msgpack"
    save(path, MLP((4, 8, 3), rngs=nnx.Rngs(0)))
    raw = serialization.msgpack_restore(path.read_bytes())
    head = next(k for k in raw if k != "state")
    meta = _json.loads(raw[head]["metadata"])
    meta["sizes"] = [4, 60000, 60000, 3]  # 3.6e9 parameters (14 GB) if built
    raw[head]["metadata"] = _json.dumps(meta)
    path.write_bytes(serialization.msgpack_serialize(raw))
    refusal = r"cannot rebuild jcausal.models:MLP from .* does not match the model's structure"
    with pytest.raises(ValueError, match=refusal):
        load_model("jcausal.models:MLP", np.zeros(4, np.float32), path)
