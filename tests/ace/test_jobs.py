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
            chunk_features=1, progress=False, model_name="test:mlp")
    print("JOB-DONE")
""")


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)


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
            chunk_features=2, progress=False, distributed=distributed, model_name="test:multi",
            wait_timeout=300)
    print("OK", jax.process_index(), len(jax.devices()))
""")


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
    f, p = load_model("usermod:good")
    assert f(p, np.ones(3, np.float32)).shape == (2,)
    for spec, match in [("usermod", "module:function"), ("nosuchmod:f", "cannot import"),
                        ("usermod:missing", "no callable"), ("usermod:wrong", r"\(model, params\)"),
                        ("usermod:boom", "no weights")]:
        with pytest.raises(ValueError, match=match):
            load_model(spec)
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
    model, params = load_model("jcausal.models:MLP", tmp_path / "m.msgpack")
    assert isinstance(model, Split)
    x = jnp.linspace(0, 1, 5)
    # class probabilities, as `jcausal ace file` computes for the same checkpoint (issue 21, item 4)
    np.testing.assert_allclose(model.rest(params, model.first(params, x)), jax.nn.softmax(m(x)), rtol=1e-6)
    with pytest.raises(ValueError, match="not a Flax NNX Module"):
        load_model("jcausal.ace.jobs:run_job", tmp_path / "m.msgpack")
    from jcausal.models import GCECNN

    save(tmp_path / "c.msgpack", GCECNN(4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="holds a GCECNN"):
        load_model("jcausal.models:MLP", tmp_path / "c.msgpack")
