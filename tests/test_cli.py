import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import jcausal
from jcausal._src import io
from jcausal.cli import main
from tests.conftest import read_only_folder

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--num-alphas", "6", "--max-order", "2", "--quiet"]  # a fast ace run


@pytest.fixture(scope="session")
def iris_checkpoint(tmp_path_factory):
    """``jcausal train iris`` once per session; the checkpoint file (tests copy it)."""
    out = tmp_path_factory.mktemp("iris")
    assert main(["train", "iris", "--out", str(out), "--quiet"]) == 0
    return (out / "iris_mlp.msgpack").resolve()


@pytest.fixture(scope="session")
def sub_env():
    """Environment of ``jcausal`` subprocesses: the code under test first on the path (the run's
    compilation cache comes with ``os.environ``, see ``tests/conftest.py``)."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return dict(os.environ, PYTHONPATH=path)  # the code under test, whatever is installed


def _with_checkpoint(out: Path, ckpt: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(ckpt, out / "iris_mlp.msgpack")
    return out


def _jcausal(*argv, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "jcausal", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _snapshot(folder: Path) -> dict:
    """Every visible name of a folder -> SHA-256 of what it reads (None for a dangling link)."""
    return {p.name: io.file_sha256(p) if p.is_file() else None for p in sorted(folder.iterdir())
            if not p.name.startswith(".")}


def _check_set(folder: Path, name: str = "ace_iris") -> dict:
    """The set's JSON, after checking that the files it names are the ones beside it."""
    meta = json.loads((folder / f"{name}.json").read_text())
    assert io.verify_manifest(folder / f"{name}.json") == []
    assert sorted(meta["files"]) == [f"{name}.npz", f"{name}.png"]
    return meta


def _one_line_error(capsys, argv, match):
    """``main(argv)`` refuses with exit status 2 and one ``jcausal: ...`` line matching ``match``."""
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("jcausal: "), err
    assert match in err[0], err[0]
    return err[0]


def test_version_and_help(capsys):
    for argv in (["--version"], ["--help"]):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 0
    out = capsys.readouterr().out
    assert jcausal.__version__ in out and "train" in out


def test_help_and_refusals_import_no_jax():
    """``--help`` and options refused from the command line alone answer without importing jax
    (issue 30: 7-13 s before; the time itself is measured in the closing note, not asserted)."""
    code = textwrap.dedent("""
        import sys
        from jcausal.cli import main
        for argv in (["--help"], ["ace", "--help"], ["gce", "mnist", "--help"], ["tracer", "--help"]):
            try:
                main(argv)
            except SystemExit as e:
                assert e.code == 0, argv
        for argv in (["ace", "run", "--model", "m:f", "--data", "x.npy", "--num-alphas", "0"],
                     ["ace", "iris", "--num-alphas", "0"], ["train", "iris", "--activation", "nope"],
                     ["ace", "iris", "--method", "nope"], ["gce", "mnist", "--K", "0"]):
            assert main(argv) == 2, argv
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "numpy")))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_cli_tables_equal_the_library():
    """The names the CLI writes out (so that parsing imports no jax) are the library's."""
    from jcausal.ace import estimators as E
    from jcausal.cli import ace_methods as cli_ace
    from jcausal.cli import train as cli_train
    from jcausal.models import ACTIVATIONS

    assert tuple(cli_ace.METHOD_KINDS) == E.method_names()
    assert cli_ace.METHOD_KINDS == {n: E.lookup(n).kind for n in E.method_names()}
    assert cli_ace.RANK_METHODS == tuple(sorted(n for n in E.REGISTRY if E.takes_setting(n, "rank")))
    assert cli_ace.DEFAULT_METHOD == E.default_method(True)
    assert cli_train.ACTIVATIONS == tuple(sorted(ACTIVATIONS))


def test_train_iris(iris_checkpoint):
    from jcausal.models.checkpoint import read_metadata

    out = iris_checkpoint.parent
    meta = json.loads((out / "iris_mlp.json").read_text())
    assert meta["test_accuracy"] >= 0.93
    assert io.verify_manifest(out / "iris_mlp.json") == []
    assert read_metadata(iris_checkpoint) == {"model": "MLP", "sizes": [4, 8, 3], "activation": "relu",
                                              "dataset": "iris", "seed": 0, "epochs": 300, "lr": 0.01}


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "jcausal", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"jcausal {jcausal.__version__}"


def test_ace_iris(tmp_path, capsys, iris_checkpoint):
    from jcausal.ace import load_result

    out = _with_checkpoint(tmp_path / "out", iris_checkpoint)
    old = os.umask(0o022)
    try:
        assert main(["ace", "iris", "--out", str(out), "--quiet"]) == 0
    finally:
        os.umask(old)
    text = capsys.readouterr().out
    assert "Iris-setosa" in text and "petal width (cm)" in text and "spread" in text
    assert (out / "ace_iris.png").stat().st_size > 10_000
    meta = _check_set(out)
    assert meta["checkpoint"]["sha256"] == io.file_sha256(out / "iris_mlp.msgpack")
    for name in ("ace_iris.npz", "ace_iris.png", "ace_iris.json"):  # a normal write's mode (item 7)
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o644
    res = load_result(out / "ace_iris.npz")
    assert res.expectations.shape == (4, 20, 3)
    e = np.asarray(res.expectations)
    assert meta["expectations_range"] == pytest.approx([e.min(), e.max()])
    assert not meta["expectations_outside_unit_interval"]  # eqn 2 of probabilities
    # a second run replaces the whole set
    assert main(["ace", "iris", "--out", str(out), "--quiet", "--method", "directional",
                 "--rank", "0.99", "--num-alphas", "8"]) == 0
    assert load_result(out / "ace_iris.npz").expectations.shape == (4, 8, 3)
    assert _check_set(out)["method"] == "directional"
    assert len([p for p in (out / ".jcausal" / "ace_iris").iterdir() if p.name != "current"]) == 1


def test_ace_file_mode_and_errors(tmp_path, capsys):
    from flax import nnx

    from jcausal.models import MLP, save

    X = np.random.default_rng(0).uniform(size=(50, 3)).astype(np.float32)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    save(tmp_path / "m.msgpack", MLP((3, 5, 2), rngs=nnx.Rngs(0)))
    assert main(["ace", "file", "--data", str(tmp_path / "x.csv"), "--checkpoint",
                 str(tmp_path / "m.msgpack"), "--sizes", "3", "5", "2", "--out", str(tmp_path / "o"),
                 "--num-alphas", "8", "--max-order", "3", "--quiet"]) == 0
    assert (tmp_path / "o" / "ace_file.npz").is_file()
    capsys.readouterr()
    _one_line_error(capsys, ["ace", "file", "--data", str(tmp_path / "x.csv"), "--checkpoint",
                             str(tmp_path / "m.msgpack"), "--sizes", "3", "6", "2", "--quiet",
                             "--out", str(tmp_path / "o2")],
                    "sizes: checkpoint [3, 5, 2], requested [3, 6, 2]")
    _one_line_error(capsys, ["ace", "file", "--quiet"], "needs")


# ------------------------------------------------------------- item 1: checkpoint settings checked


@pytest.mark.parametrize("extra,match", [
    (["--activation", "tanh"], "activation: checkpoint 'relu', requested 'tanh'"),
    (["--seed", "5"], "seed: checkpoint 0, requested 5"),
    (["--sizes", "4", "16", "3"], "sizes: checkpoint [4, 8, 3], requested [4, 16, 3]"),
])
def test_ace_refuses_a_checkpoint_trained_otherwise(tmp_path, capsys, iris_checkpoint, monkeypatch,
                                                     extra, match):
    out = _with_checkpoint(tmp_path / "ck", iris_checkpoint)
    before = _snapshot(out)
    monkeypatch.setattr("jcausal.ace.explain", _no_work)
    msg = _one_line_error(capsys, ["ace", "iris", "--out", str(out), "--quiet", *extra], match)
    assert "use another --out" in msg
    assert _snapshot(out) == before  # nothing written, nothing mixed


def test_given_checkpoint_checked_against_its_record(tmp_path, capsys, iris_checkpoint, monkeypatch):
    monkeypatch.setattr("jcausal.ace.explain", _no_work)
    X = np.random.default_rng(0).uniform(size=(20, 4))
    np.save(tmp_path / "x.npy", X)
    _one_line_error(capsys, ["ace", "file", "--data", str(tmp_path / "x.npy"), "--checkpoint",
                             str(iris_checkpoint), "--sizes", "4", "8", "3", "--activation", "tanh",
                             "--out", str(tmp_path / "o")], "activation: checkpoint 'relu'")
    assert not (tmp_path / "o").exists()


def _no_work(*a, **k):
    raise AssertionError("the run started computing before refusing the request")


# ------------------------------------------------------ item 3: the table never hides a spread


def test_table_flags_order0_curves_with_spread_and_probabilities_outside_unit_interval(
        tmp_path, capsys, iris_checkpoint, monkeypatch):
    """Replace the model by one whose E[y0 | do(x0 = a)] = 0.5 + 1.5 sin(40 a): jagged on the
    grid (Phase II picks order 0) and outside [0, 1] -- what the eqn-4 expansion produced on a
    trained network. Its row must not read +0.000 and the output must flag it."""
    import jax.numpy as jnp

    import jcausal.ace
    import jcausal.experiments.ace_mlp as ace_mlp

    real = jcausal.ace.explain

    def jagged(p, x):
        y0 = 0.5 + 1.5 * jnp.sin(40.0 * x[0])
        return jnp.stack([y0, 1.0 - y0, jnp.zeros_like(y0)])

    # the experiment `ace iris` runs (jcausal.experiments.ace_mlp) computes with this model instead
    monkeypatch.setattr(ace_mlp, "explain", lambda f, X, **kw: real(jagged, X, params=jnp.zeros(1), **kw))
    out = _with_checkpoint(tmp_path / "o", iris_checkpoint)
    assert main(["ace", "iris", "--out", str(out), "--quiet", "--features", "0", "1"]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("  sepal length (cm)")]
    assert len(rows) == 3
    setosa, virginica = rows[0], rows[2]
    cells = setosa.split()
    assert cells[3] == "0", setosa  # order 0 was chosen for the jagged curve ...
    assert float(cells[4]) > 0.5  # ... whose spread is large
    assert "+0.000" not in setosa and "*" in setosa and setosa.endswith("!")
    assert virginica.split()[4] == "0.000"  # a truly flat curve still reads 0
    assert "outside [0, 1]" in text and "order 0" in text
    meta = _check_set(out)
    assert meta["expectations_outside_unit_interval"] is True
    assert meta["expectations_range"][0] < -0.9 and meta["expectations_range"][1] > 1.9
    flagged = {(c["feature"], c["output"]) for c in meta["flags"]["outside_unit_interval"]}
    assert ("sepal length (cm)", "Iris-setosa") in flagged
    assert ("sepal width (cm)", "Iris-virginica") not in flagged
    assert any(c["feature"] == "sepal length (cm)" and c["spread"] > 0.5
               for c in meta["flags"]["order0_with_spread"])
    assert len(meta["warnings"]) == 2


# ------------------------------------------------------------- item 8: errors before any work


BAD_FILES = {
    "header.csv": ("a,b,c\n1,2,3\n4,5,6\n", "a header row"),
    "nan.csv": ("1,2,3\n4,nan,6\n7,8,9\n", "NaN/inf values (first at row 1, column 1"),
    "empty.csv": ("", "holds no rows"),
    "blank.txt": ("\n  \n", "holds no rows"),
    "ragged.csv": ("1,2,3\n4,5\n", "cannot read"),
    "const.csv": ("1,5,3\n4,5,6\n7,5,9\n", "constant feature(s) in the data, nothing to intervene on: x1"),
    "wide.csv": ("1,2,3,4\n5,6,7,8\n", "the data has 4 features but --sizes starts with 3"),
    "one.csv": ("1,2,3\n", "ACE needs at least 2"),
}


@pytest.mark.parametrize("fname", sorted(BAD_FILES))
def test_bad_data_files(tmp_path, capsys, monkeypatch, fname):
    from flax import nnx

    from jcausal.models import MLP, save

    text, match = BAD_FILES[fname]
    (tmp_path / fname).write_text(text)
    save(tmp_path / "m.msgpack", MLP((3, 4, 2), rngs=nnx.Rngs(0)))
    monkeypatch.setattr("jcausal.ace.explain", _no_work)
    _one_line_error(capsys, ["ace", "file", "--data", str(tmp_path / fname), "--checkpoint",
                             str(tmp_path / "m.msgpack"), "--sizes", "3", "4", "2", "--out",
                             str(tmp_path / "o")], match)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra,match", [
    (["--num-alphas", "5", "--max-order", "5"], "--num-alphas 5 is too few for --max-order 5"),
    (["--features", "7"], "--features [7] out of range: the data has 4 features"),
    (["--features", "-1"], "--features must be indices >= 0"),
    (["--features", "1", "1"], "duplicates"),
    (["--rank", "0"], "--rank must be a positive"),
    (["--rank", "1.5"], "fractional --rank must be in (0, 1]"),
    (["--rank", "9"], "--rank 9 exceeds the number of features (4)"),
    (["--method", "finite_difference"], "add --x64"),
    (["--activation", "swish"], "unknown --activation 'swish'"),
    (["--sizes", "5", "8", "3"], "must start with 4"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_options_refused_before_any_work(tmp_path, capsys, monkeypatch, extra, match):
    monkeypatch.setattr("jcausal.ace.explain", _no_work)
    monkeypatch.setattr("jcausal.cli.ace.fit_iris_mlp", _no_work)
    _one_line_error(capsys, ["ace", "iris", "--out", str(tmp_path / "o"), "--quiet", *extra], match)
    assert not (tmp_path / "o").exists()


def test_unusable_out_folder_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("jcausal.ace.explain", _no_work)
    monkeypatch.setattr("jcausal.cli.ace.fit_iris_mlp", _no_work)
    (tmp_path / "f").write_text("x")
    _one_line_error(capsys, ["ace", "iris", "--out", str(tmp_path / "f")], "is not a folder")
    _one_line_error(capsys, ["train", "iris", "--out", str(tmp_path / "f")], "not a folder")
    ro = read_only_folder(tmp_path)
    _one_line_error(capsys, ["ace", "iris", "--out", str(ro)], "cannot write in output folder")


def test_debug_shows_the_traceback_and_keeps_the_exit_status(tmp_path, capsys):
    """Issue 32: ``--debug`` turned a refusal's status 2 into 1; it now changes only what is printed."""
    for argv in (["--debug", "ace", "iris", "--num-alphas", "3", "--out", str(tmp_path)],
                 ["ace", "iris", "--num-alphas", "3", "--out", str(tmp_path), "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "CLIError" in err
        assert err.strip().splitlines()[-1].startswith("jcausal: --num-alphas 3 is too few")


def test_no_command_and_a_user_system_exit_are_errors(tmp_path, capsys, monkeypatch):
    """Issue 32: ``jcausal`` alone exited 0, and ``ace run --model builtins:exit`` exited 0 with
    nothing written (the factory's SystemExit was taken as success)."""
    assert main([]) == 2
    assert "jcausal: name a command" in capsys.readouterr().err
    np.save(tmp_path / "X.npy", np.random.default_rng(0).uniform(size=(10, 3)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    assert main(["ace", "run", "--model", "builtins:exit", "--data", "X.npy", "--out", "job", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "jcausal: the run was stopped by SystemExit(None) raised inside it" in err
    assert not (tmp_path / "job" / "ace.npz").exists()


def test_error_exit_status_from_the_shell(tmp_path, sub_env):
    (tmp_path / "h.csv").write_text("a,b\n1,2\n")
    p = _jcausal("ace", "file", "--data", str(tmp_path / "h.csv"), "--checkpoint", str(tmp_path / "h.csv"),
                 "--sizes", "2", "2", env=sub_env)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert err.strip().startswith("jcausal: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


# ------------------------------------------------------------------ item 9: finite_difference


def test_finite_difference_runs_with_x64(tmp_path, iris_checkpoint):
    """``--x64 --method finite_difference`` matches the exact Hessian (float64 reference)."""
    got = {}
    for method in ("finite_difference", "exact"):
        out = _with_checkpoint(tmp_path / method, iris_checkpoint)
        assert main(["ace", "iris", "--out", str(out), "--method", method, "--x64", *SMALL]) == 0
        got[method] = io.read_npz_arrays(out / "ace_iris.npz", ["expectations"])["expectations"]
        assert _check_set(out)["x64"] is True
    assert got["exact"].dtype == np.float64
    np.testing.assert_allclose(got["finite_difference"], got["exact"], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------- items 6 and 7: concurrency, kills


@pytest.mark.slow  # real jcausal processes (25 s)
def test_concurrent_runs_one_result_one_refusal(tmp_path, sub_env, iris_checkpoint, capsys):
    """20 trials of two runs into one folder: one clean result, one clear refusal at once.

    17 trials hold the lock from this process (the refused run must leave the folder as it was):
    3 refused runs are real ``jcausal`` processes, 14 are ``main`` in this process (the lock is
    the kernel's ``flock`` on its own open file: refused within one process as across two).
    3 trials are two real ``jcausal ace iris`` runs, each holding its lock until the test releases
    it (so the rival meets a run in its locked phase on any machine): started at the same moment
    into an empty folder (the winner trains the model), or the second started once the first
    holds the lock (as a process in trial 1, as ``main`` here in trial 2)."""
    from tests.conftest import jcausal_holding_lock, wait_for_lock

    refusals = 0
    held = _with_checkpoint(tmp_path / "held", iris_checkpoint)
    with io.output_lock(held):
        before = _snapshot(held)
        message = (f"jcausal: output folder {held} is in use by another jcausal run (pid {os.getpid()}); "
                   "wait for it to finish or choose another output folder")
        procs = [_jcausal("ace", "iris", "--out", str(held), *SMALL, env=sub_env) for _ in range(3)]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 2, err
            assert err.strip() == message
            refusals += 1
        for _ in range(14):
            assert main(["ace", "iris", "--out", str(held), *SMALL]) == 2
            assert capsys.readouterr().err.strip() == message
            refusals += 1
        assert _snapshot(held) == before
    argv = ["ace", "iris", *SMALL]
    for trial in range(3):
        out, go = tmp_path / f"real{trial}", tmp_path / f"go{trial}"
        if trial == 0:  # both at once into an empty folder: the winner trains the model
            a = jcausal_holding_lock([*argv, "--out", str(out)], go, sub_env)
            b = jcausal_holding_lock([*argv, "--out", str(out)], go, sub_env)
            deadline = time.monotonic() + 300
            while a.poll() is None and b.poll() is None:  # the loser is refused at once
                assert time.monotonic() < deadline
                time.sleep(0.01)
            go.touch()
            (_, ea), (_, eb) = a.communicate(timeout=300), b.communicate(timeout=300)
            runs = [(a.returncode, ea, a.pid), (b.returncode, eb, b.pid)]
        else:  # the second started once the first holds the lock
            _with_checkpoint(out, iris_checkpoint)
            a = jcausal_holding_lock([*argv, "--out", str(out)], go, sub_env)
            wait_for_lock(out, a)
            if trial == 1:
                b = _jcausal(*argv, "--out", str(out), env=sub_env)
                _, eb = b.communicate(timeout=300)
                rc_b = b.returncode
            else:
                rc_b, eb = main([*argv, "--out", str(out)]), capsys.readouterr().err
            go.touch()
            _, ea = a.communicate(timeout=300)
            runs = [(a.returncode, ea, a.pid), (rc_b, eb, None)]
        (rc_ok, _, pid_ok), (rc_no, err_no, _) = sorted(runs, key=lambda r: r[0])
        assert (rc_ok, rc_no) == (0, 2), runs
        assert err_no.strip().splitlines() == [
            f"jcausal: output folder {out} is in use by another jcausal run (pid {pid_ok}); wait for it "
            "to finish or choose another output folder"]
        _check_set(out)
        if trial == 0:
            assert io.verify_manifest(out / "iris_mlp.json") == []
        refusals += 1
    assert refusals == 20


_KILL_HOOK = textwrap.dedent("""
    import os, signal, sys
    n = int(sys.argv[1])
    armed, count = [False], [0]
    def wrap(fn):
        def inner(*a, **k):  # armed by the first change that names the result files
            armed[0] = armed[0] or any(isinstance(x, (str, os.PathLike)) and "ace_iris" in os.fspath(x)
                                       for x in a)
            if armed[0]:
                count[0] += 1
                if count[0] == n:
                    os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return inner
    for name in ("replace", "symlink", "link", "unlink", "mkdir", "rmdir", "open"):  # every change
        setattr(os, name, wrap(getattr(os, name)))
    from jcausal.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.slow  # ~35 s of CPU; tests/_src/test_io.py kills the same writer at every step, fast
def test_sigkill_during_the_write_phase_leaves_old_or_new_set(tmp_path, sub_env, iris_checkpoint):
    """Kill ``jcausal ace iris`` before a random one of the file-system changes of its write phase
    (23 of them); every state is one whole set: the JSON's checksums hold and the ``.npz`` has the
    JSON's grid size (old run: the previous size, new run: this trial's)."""
    from jcausal._src.io import read_npz_arrays

    out = _with_checkpoint(tmp_path / "out", iris_checkpoint)
    assert main(["ace", "iris", "--out", str(out), "--num-alphas", "6", "--max-order", "2",
                 "--quiet"]) == 0
    hook = tmp_path / "hook.py"
    hook.write_text(_KILL_HOOK)
    rng = random.Random(15)
    prev, killed = 6, 0
    for trial, n in enumerate(rng.sample(range(1, 24), 3)):
        size = 7 + trial
        r = subprocess.run([sys.executable, str(hook), str(n), "ace", "iris", "--out", str(out),
                            "--num-alphas", str(size), "--max-order", "2", "--quiet"],
                           cwd=REPO, env=sub_env, capture_output=True, text=True, timeout=300)
        killed += r.returncode == -signal.SIGKILL
        assert r.returncode in (0, -signal.SIGKILL), r.stderr
        meta = _check_set(out)
        assert meta["num_alphas"] in (prev, size)
        arrays = read_npz_arrays(out / "ace_iris.npz", ["expectations"])
        assert arrays["expectations"].shape == (4, meta["num_alphas"], 3)
        prev = meta["num_alphas"]
    assert killed >= 2


def test_ace_run_any_model_and_latent_help(tmp_path, monkeypatch, capsys):
    """`jcausal ace run --model module:function --data X.npy`: eqn 2 by default, result readable by
    load_result; a rerun computes nothing; bad --model is one clear line."""
    import json as _json
    import textwrap

    import numpy as np

    from jcausal.ace import load_result
    from jcausal.cli import main

    (tmp_path / "mymodel.py").write_text(textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from jcausal.models import Split
        def make():
            rng = np.random.default_rng(0)
            p = {"W": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32),
                 "V": jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)}
            return Split(lambda p, x: p["W"] @ x, lambda p, z: jax.nn.softmax(p["V"] @ jnp.tanh(z))), p
    """))
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "X.npy", np.random.default_rng(1).uniform(size=(60, 3)).astype(np.float32))
    argv = ["ace", "run", "--model", "mymodel:make", "--data", "X.npy", "--out", "job", "--num-alphas", "8",
            "--max-order", "3", "--chunk-features", "2", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Phase I method: definition" in out and "chunks computed this run: 2 of 2" in out
    res = load_result(tmp_path / "job" / "ace.npz")
    assert res.expectations.shape == (3, 8, 2)
    assert main(argv) == 0
    assert _json.loads((tmp_path / "job" / "ace.json").read_text())["computed_this_run"] == []
    try:
        code = main(["ace", "run", "--model", "mymodel:nothing", "--data", "X.npy", "--out", "j2", "--quiet"])
    except SystemExit as e:
        code = e.code
    assert code == 2
    assert "no callable" in capsys.readouterr().err


@pytest.mark.slow
def test_ace_latent_vae_on_a_tiny_idx_folder(tmp_path, capsys):
    import json as _json

    import numpy as np

    from jcausal.cli import main
    from jcausal.data.idx import write_idx

    rng = np.random.default_rng(0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", (rng.uniform(size=(60, 28, 28)) * 255).astype(np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(60, dtype=np.uint8) % 10)
    argv = ["ace", "latent-vae", "--data", str(tmp_path), "--epochs", "2", "--samples", "4", "--out",
            str(tmp_path / "o"), "--quiet"]
    # issue 32: a run killed during training left a periodic checkpoint that recorded no settings, and
    # every rerun was refused ("trained with other settings (seed: not recorded ...)")
    from jcausal.models import checkpoint

    real = checkpoint.save

    def killed_after_first(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # as a kill right after the first periodic checkpoint

    checkpoint.save = killed_after_first
    try:
        assert main(argv) == 130
    finally:
        checkpoint.save = real
    assert not (tmp_path / "o" / "latent_ace.json").exists()
    assert main(argv) == 0  # the same command again: it trains again and completes
    summary = _json.loads((tmp_path / "o" / "latent_ace.json").read_text())
    assert len(summary["ranking"]) == 10 and len(summary["figures"]) == 4
    for name in summary["figures"]:
        assert (tmp_path / "o" / name).stat().st_size > 1000
    assert "total effect" in capsys.readouterr().out


def test_training_that_diverges_exits_3_in_every_command(tmp_path, capsys):
    """Issue 32: ``train iris --lr 1e30`` exited 1 ("internal error (FloatingPointError ...)") where
    the README promises 3 for failed training. Every trainer raises TrainingDiverged; the CLI maps it
    to 3."""
    assert main(["train", "iris", "--lr", "1e30", "--epochs", "5", "--out", str(tmp_path), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "jcausal: training failed: training loss became non-finite at step" in err
    assert "internal error" not in err
