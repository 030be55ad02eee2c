"""The one CLI core (issue 21): what every command shares, and the probes that broke it.

Each test names the item of issue 21 it checks; each failed on the code before the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jcausal.cli import main
from tests.conftest import REPO, read_only_folder


def _refused(capsys, argv, match, code=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code, err
    assert len(err) == 1 and err[0].startswith("jcausal: "), err
    assert match in err[0], err[0]
    return err[0]


def _no_work(*a, **k):
    raise AssertionError("the command started working before refusing the request")


MODEL = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    def make():
        W = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
        return (lambda p, x: jax.nn.softmax(p @ x)), W
    def logits():
        W = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
        return (lambda p, x: 3.0 * (p @ x)), W
""")


@pytest.fixture
def job_dir(tmp_path, monkeypatch):
    (tmp_path / "coremodel.py").write_text(MODEL)
    X = np.random.default_rng(1).uniform(size=(80, 4)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


RUN = ["ace", "run", "--model", "coremodel:make", "--data", "X.npy", "--num-alphas", "6", "--max-order", "2",
       "--quiet"]


# ------------------------------------------------------------------------------- item 1: security


def _console(*argv, cwd):
    """The installed ``jcausal`` script when there is one (sys.path[0] is its own folder), else
    ``python -m jcausal`` (which puts the working folder first: ``__main__`` moves it last)."""
    script = Path(sys.executable).parent / "jcausal"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "jcausal"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*cmd, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # a real `jcausal ace run` process each (7-9 s)
@pytest.mark.parametrize("how", ["script", "module"])
def test_ace_run_never_imports_a_working_folder_file_over_an_installed_package(tmp_path, how):
    """The probe: a folder holding optax.py (print HIJACKED, exit 7); `ace run --model
    jcausal.models:MLP --checkpoint ck.msgpack` imported it (it printed HIJACKED, exit 7)."""
    from flax import nnx

    from jcausal.models import MLP, save

    for dep in ("optax", "numpyro", "flax"):
        (tmp_path / f"{dep}.py").write_text("print('HIJACKED')\nraise SystemExit(7)\n")
    (tmp_path / "coremodel.py").write_text(MODEL)
    save(tmp_path / "ck.msgpack", MLP((4, 6, 3), rngs=nnx.Rngs(0)))
    np.save(tmp_path / "X.npy", np.random.default_rng(1).uniform(size=(40, 4)).astype(np.float32))
    small = ["--num-alphas", "6", "--max-order", "2", "--quiet"]
    runs = {"checkpoint": ["ace", "run", "--model", "jcausal.models:MLP", "--checkpoint", "ck.msgpack",
                           "--data", "X.npy", "--out", "a", *small],
            "user module": [*RUN, "--out", "b"]}  # a module next to the command is still found
    for name, argv in runs.items():
        r = (_console(*argv, cwd=tmp_path) if how == "script" else subprocess.run(
            [sys.executable, "-m", "jcausal", *argv], cwd=tmp_path, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600))
        assert "HIJACKED" not in r.stdout + r.stderr, name
        assert r.returncode == 0, (name, r.stderr)
    assert (tmp_path / "a" / "ace.npz").is_file() and (tmp_path / "b" / "ace.npz").is_file()


# ------------------------------------------------------------ items 3, 4: every option changes the answer


def test_ace_run_options_change_the_answer_or_are_refused(job_dir, capsys):
    from jcausal.ace import load_result

    assert main([*RUN, "--out", "a", "--num-rows", "20", "--seed", "0"]) == 0
    assert main([*RUN, "--out", "b", "--num-rows", "20", "--seed", "1"]) == 0
    ea = np.asarray(load_result(job_dir / "a" / "ace.npz").expectations)
    eb = np.asarray(load_result(job_dir / "b" / "ace.npz").expectations)
    assert not np.allclose(ea, eb)  # another seed, another subsample
    capsys.readouterr()
    _refused(capsys, [*RUN, "--out", "c", "--num-rows", "0"], "--num-rows must be >= 2")
    _refused(capsys, [*RUN, "--out", "c", "--num-rows", "-5"], "--num-rows must be >= 2")
    _refused(capsys, [*RUN, "--out", "c", "--rank", "2"], "--rank truncates the covariance factor")
    _refused(capsys, [*RUN, "--out", "c", "--method", "directional", "--num-rows", "5"],
             "--num-rows subsamples the rows of eqn 2")
    # --rank with a factor method: a truncated factor, a different answer from full rank
    assert main([*RUN, "--out", "d", "--method", "directional"]) == 0
    assert main([*RUN, "--out", "e", "--method", "directional", "--rank", "1"]) == 0
    ed = np.asarray(load_result(job_dir / "d" / "ace.npz").expectations)
    ee = np.asarray(load_result(job_dir / "e" / "ace.npz").expectations)
    assert not np.allclose(ed, ee)
    # --x64 computes in float64: finite_difference runs
    assert main([*RUN, "--out", "f", "--method", "finite_difference", "--x64"]) == 0
    ef = np.asarray(load_result(job_dir / "f" / "ace.npz").expectations)
    np.testing.assert_allclose(ef, ed, atol=1e-4)
    assert not (job_dir / "c").exists()


def test_ace_run_records_what_the_outputs_are(job_dir, capsys):
    assert main([*RUN, "--out", "p"]) == 0
    assert "outputs: probabilities" in capsys.readouterr().out
    assert json.loads((job_dir / "p" / "ace.json").read_text())["outputs"] == "probabilities"
    assert main([*RUN[:3], "coremodel:logits", *RUN[4:], "--out", "r"]) == 0
    assert "outputs: raw" in capsys.readouterr().out
    assert json.loads((job_dir / "r" / "ace.json").read_text())["outputs"] == "raw"


def test_ace_run_checkpoint_gives_probabilities_as_ace_file_does(tmp_path, monkeypatch, capsys):
    from flax import nnx

    from jcausal.ace import load_result
    from jcausal.models import MLP, save

    monkeypatch.chdir(tmp_path)
    save(tmp_path / "m.msgpack", MLP((3, 5, 2), rngs=nnx.Rngs(0)))
    X = np.random.default_rng(0).uniform(size=(30, 3))
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    assert main(["ace", "run", "--model", "jcausal.models:MLP", "--checkpoint", "m.msgpack", "--data",
                 "X.npy", "--out", "run", "--num-alphas", "8", "--max-order", "3", "--quiet"]) == 0
    assert main(["ace", "file", "--data", "x.csv", "--checkpoint", "m.msgpack", "--sizes", "3", "5", "2",
                 "--out", "file", "--num-alphas", "8", "--max-order", "3", "--quiet"]) == 0
    E_run = np.asarray(load_result(tmp_path / "run" / "ace.npz").expectations)
    E_file = np.asarray(load_result(tmp_path / "file" / "ace_file.npz").expectations)
    assert 0.0 <= E_run.min() and E_run.max() <= 1.0
    np.testing.assert_allclose(E_run, E_file, atol=1e-5)
    assert json.loads((tmp_path / "file" / "ace_file.json").read_text())["outputs"] == "probabilities"


# ------------------------------------------------------------------------- item 10: late errors


def test_ace_run_refuses_constant_columns_before_any_chunk_and_takes_low_high(job_dir, capsys, monkeypatch):
    X = np.load(job_dir / "X.npy")
    X[:, 2] = 0.5
    np.save(job_dir / "C.npy", X)
    argv = [*RUN[:5], "C.npy", *RUN[6:]]
    monkeypatch.setattr("jcausal.ace.jobs.run_job", _no_work)
    _refused(capsys, [*argv, "--out", "c"], "nothing to intervene on for feature(s) x2 in [0.5, 0.5]")
    _refused(capsys, [*argv, "--out", "c", "--low", "0", "1"], "--low takes one value or one per feature")
    monkeypatch.undo()
    monkeypatch.chdir(job_dir)
    assert main([*argv, "--out", "c", "--low", "0", "--high", "1"]) == 0
    meta = json.loads((job_dir / "c" / "ace.json").read_text())
    assert meta["features"] == [0, 1, 2, 3]


def test_huge_alpha_grid_refused_from_a_memory_estimate(job_dir, capsys, monkeypatch):
    monkeypatch.setattr("jcausal.ace.jobs.run_job", _no_work)
    _refused(capsys, [*RUN, "--out", "h", "--num-alphas", "100000000"], "GiB")
    assert not (job_dir / "h").exists()


def test_ace_iris_rank_with_the_default_method_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("jcausal.cli.ace.fit_iris_mlp", _no_work)
    _refused(capsys, ["ace", "iris", "--rank", "2", "--out", str(tmp_path / "o"), "--quiet"],
             "--rank truncates the covariance factor")
    assert not (tmp_path / "o").exists()


def test_ace_run_complex_data_refused(job_dir, capsys):
    np.save(job_dir / "Z.npy", np.ones((10, 4), np.complex64))
    _refused(capsys, [*RUN[:5], "Z.npy", *RUN[6:], "--out", "z"], "must be real numbers")


@pytest.mark.parametrize("argv,match", [
    (["gce", "mnist", "--K", "0"], "--K: must be >= 1"),
    (["gce", "mnist", "--classes", "3"], "--classes needs at least 2 different digits"),
    (["gce", "mnist", "--checkpoint-every", "0"], "--checkpoint-every: must be >= 1"),
    (["gce", "mnist", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["gce", "linear", "--lr", "nan"], "--lr: must be a finite number"),
    (["gce", "linear", "--steepness", "0"], "--steepness: must be > 0"),
    (["tracer", "mnist", "--patch", "40"], "--patch 40 is larger than the 28x28 image"),
    (["tracer", "mnist", "--per-class", "-1"], "--per-class: must be >= 1"),
    (["tracer", "mnist", "--stride", "0"], "--stride: must be >= 1"),
    (["tracer", "tabular", "--epochs", "-3"], "--epochs: must be >= 1"),
    (["tracer", "tabular", "--epochs", "0"], "--epochs: must be >= 1"),
    (["tracer", "tabular", "--index", "10000"], "--index must be in [0, 142)"),
])
def test_bad_options_refused_before_any_work(tmp_path, capsys, monkeypatch, argv, match):
    monkeypatch.setattr("jcausal.models.train", _no_work)
    monkeypatch.setattr("jcausal.experiments.gce_mnist.fit_classifier", _no_work)
    monkeypatch.setattr("jcausal.gce.fit_explainer", _no_work)
    if argv[:2] == ["tracer", "mnist"]:
        from jcausal.data import write_idx  # the options are checked before the data

        write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((20, 28, 28), np.uint8))
        write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(20, dtype=np.uint8) % 10)
        argv = [*argv, "--data", str(tmp_path)]
    _refused(capsys, [*argv, "--out", str(tmp_path / "o"), "--quiet"], match)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [["tracer", "tabular"], ["gce", "linear"]])
def test_read_only_out_refused_before_training(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.setattr("jcausal.models.train", _no_work)
    monkeypatch.setattr("jcausal.gce.fit_explainer", _no_work)
    ro = read_only_folder(tmp_path)
    _refused(capsys, [*argv, "--out", str(ro), "--quiet"], "cannot write in output folder")


# --------------------------------------------------------------- items 5, 6: training that did not happen


def test_gce_linear_nonfinite_training_exits_3_naming_the_step(tmp_path, capsys, monkeypatch):
    import jcausal.gce as gce

    real = gce.fit_explainer

    def explode(*a, **kw):  # the library stops at a non-finite loss and names the step
        return real(*a, **kw)._replace(nonfinite_step=7)

    monkeypatch.setattr(gce, "fit_explainer", explode)
    msg = _refused(capsys, ["gce", "linear", "--steps", "20", "--out", str(tmp_path), "--quiet"],
                   "went non-finite at step 7", code=3)
    assert "jcausal gce linear" in msg
    assert not (tmp_path / "linear.json").exists()

    def no_steps(*a, **kw):
        return real(*a, **kw)._replace(steps=0)

    monkeypatch.setattr(gce, "fit_explainer", no_steps)
    _refused(capsys, ["gce", "linear", "--steps", "20", "--out", str(tmp_path), "--quiet"],
             "no training step was taken", code=3)


# ------------------------------------------------------------------ item 8: one result, one refusal


def test_gce_and_tracer_lock_their_output_folder(tmp_path, capsys, monkeypatch):
    from jcausal._src.io import output_lock

    monkeypatch.setattr("jcausal.models.train", _no_work)
    monkeypatch.setattr("jcausal.gce.fit_explainer", _no_work)
    for argv in (["tracer", "tabular"], ["gce", "linear"], ["tracer", "counterfactual", "tabular"],
                 ["ace", "iris"]):
        with output_lock(tmp_path):
            _refused(capsys, [*argv, "--out", str(tmp_path), "--quiet"], "is in use by another jcausal run")


@pytest.mark.slow  # real jcausal processes (15 s)
def test_two_concurrent_tracer_runs_one_result_one_refusal(tmp_path, capsys):
    """Two trials of two ``jcausal tracer tabular`` runs into one folder: the first holds the lock
    (kept in its locked phase until the second has been refused), the second is refused with exit 2
    and a clear line; the first's result is its own run's. The second is a real process in trial 0,
    and this process's ``main`` in trial 1 (the lock is the kernel's, across processes)."""
    import shutil

    from tests.conftest import jcausal_holding_lock, wait_for_lock

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "same"
    argv = ["tracer", "tabular", "--epochs", "3", "--out", str(out), "--quiet"]
    for trial in range(2):
        go = tmp_path / f"go{trial}"
        a = jcausal_holding_lock([*argv, "--seed", str(trial)], go, env)
        wait_for_lock(out, a)
        if trial == 0:
            b = subprocess.run([sys.executable, "-m", "jcausal", *argv, "--seed", str(trial)], env=env,
                               capture_output=True, text=True, timeout=600, cwd=REPO)
            rc_b, err_b = b.returncode, b.stderr
        else:
            rc_b, err_b = main([*argv, "--seed", str(trial)]), capsys.readouterr().err
        go.touch()
        _, err_a = a.communicate(timeout=600)
        assert (a.returncode, rc_b) == (0, 2), (err_a[-2000:], err_b)
        assert err_b.strip().splitlines() == [
            f"jcausal: output folder {out} is in use by another jcausal run (pid {a.pid}); wait for it to "
            "finish or choose another output folder"]
        summary = json.loads((out / "tracer_tabular.json").read_text())
        assert summary["seed"] == trial  # the printed numbers and the checkpoint are the same run's
        shutil.rmtree(out)


# ------------------------------------------------------------------------------------- item 12


@pytest.mark.parametrize("argv", [["ace", "iris"], ["gce", "linear"], ["gce", "mnist"], ["tracer", "tabular"],
                                  ["tracer", "mnist"], ["tracer", "counterfactual", "tabular"],
                                  ["tracer", "counterfactual", "mnist"], ["train", "iris"]])
def test_every_command_has_the_core_options(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--quiet", "--debug"):
        assert flag in text, (argv, flag)


def test_bad_input_exits_2_everywhere_and_debug_shows_the_traceback(tmp_path, capsys):
    _refused(capsys, ["gce", "linear", "--dim", "1", "--out", str(tmp_path)], "--dim must be >= 2")
    _refused(capsys, ["tracer", "tabular", "--eps", "2", "--out", str(tmp_path)], "--eps must be in [0, 1)")
    _refused(capsys, ["tracer", "counterfactual", "tabular", "--target", "5", "--out", str(tmp_path)],
             "--target must be in [0, 2)")
    from jcausal.cli.core import CLIError

    capsys.readouterr()
    assert main(["gce", "linear", "--dim", "1", "--out", str(tmp_path), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and CLIError.__name__ in err


# ------------------------------------------------------------------- found by the re-probe


def test_seed_out_of_range_refused_not_an_internal_error(tmp_path, capsys):
    _refused(capsys, ["tracer", "tabular", "--seed", "99999999999999999999", "--out", str(tmp_path / "o")],
             "--seed: must be in [0, 2**31 - 1]")


def test_gce_linear_steep_classifier_cosines_in_float64(tmp_path, capsys):
    """|a|^2 overflowed float32 above ~1e19: the cosines printed 0.0 (a silent wrong answer)."""
    assert main(["gce", "linear", "--steps", "30", "--n-alpha", "8", "--n-beta", "4", "--steepness", "1e30",
                 "--out", str(tmp_path), "--quiet"]) == 0
    s = json.loads((tmp_path / "linear.json").read_text())
    W, a = np.asarray(s["W"], np.float64), np.asarray(s["a"], np.float64)
    a = a / np.linalg.norm(a)
    np.testing.assert_allclose(s["cos_w_alpha_a"], abs(W[:, 0] @ a) / np.linalg.norm(W[:, 0]), rtol=1e-6)
    assert s["cos_w_alpha_a"] > 0.0


def test_ace_run_nan_data_named_as_data(job_dir, capsys):
    X = np.load(job_dir / "X.npy")
    X[5, 1] = np.nan
    np.save(job_dir / "N.npy", X)
    _refused(capsys, [*RUN[:5], "N.npy", *RUN[6:], "--out", "n"],
             "holds 1 NaN/inf values (first at row 5, column 1")


def test_out_empty_or_too_long_is_refused_before_any_work(tmp_path, capsys):
    """Issue 32: ``--out ""`` wrote into the working folder, and ``gce linear --out <4,046-character
    path>`` trained for 18 s before failing at publication ("File name too long")."""
    _refused(capsys, ["gce", "linear", "--out", ""], "--out: must name a folder")
    deep = tmp_path / "/".join(["d" * 200] * 20)  # about 4,050 characters
    _refused(capsys, ["gce", "linear", "--out", str(deep)], "leaves no room for the run's files")
    _refused(capsys, ["gce", "linear", "--out", str(tmp_path / ("n" * 300))], "a folder name of 300 bytes")


def test_constraints_against_the_inputs_are_checked_before_any_training(tmp_path, capsys):
    """Issue 32: an immutable feature whose range excludes some inputs' values was refused only after
    the classifier and the GAN were trained (47 s)."""
    out = tmp_path / "o"
    _refused(capsys, ["tracer", "counterfactual", "tabular", "--immutable", "mean area", "--range",
                      "mean area:300:1500", "--out", str(out), "--quiet"],
             "--immutable/--range: feature 'mean area' is immutable but its range excludes the value of "
             "input(s)")
    assert not out.exists() or not any(out.iterdir())  # nothing trained, nothing written
