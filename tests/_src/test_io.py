"""File outputs that survive kills and concurrent runs (issue 15, items 6, 7, 10)."""

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jcausal._src import io

from .publish_helper import publish

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def umask():
    """Set a umask for the test and restore the old one."""
    old = os.umask(0o022)

    def set_(mask):
        os.umask(mask)

    yield set_
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_write_respects_umask(tmp_path, umask, mask):
    umask(mask)
    io.atomic_write_bytes(tmp_path / "a.bin", b"abc")
    with open(tmp_path / "plain.bin", "wb") as fh:  # what a normal write gives
        fh.write(b"abc")
    assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "plain.bin") == 0o666 & ~mask
    io.atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert _mode(tmp_path / "a.json") == 0o666 & ~mask


def test_overwrite_keeps_the_mode_like_a_normal_write(tmp_path, umask):
    umask(0o022)
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    os.chmod(p, 0o640)
    io.atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new" and _mode(p) == 0o640
    assert os.listdir(tmp_path) == ["a.bin"]  # no temporary left behind


def test_temporary_names_are_unique_and_cleaned_on_error(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", spy)
    io.atomic_write_bytes(tmp_path / "a.png", b"1")
    io.atomic_write_bytes(tmp_path / "a.png", b"2")
    assert len(set(seen)) == 2 and all(s.startswith(".a.png.") for s in seen)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


def test_atomic_savefig_and_sha256(tmp_path, umask):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    umask(0o022)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    io.atomic_savefig(fig, tmp_path / "f.png", dpi=50)
    plt.close(fig)
    data = (tmp_path / "f.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and _mode(tmp_path / "f.png") == 0o644
    assert io.file_sha256(tmp_path / "f.png") == hashlib.sha256(data).hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["f.png"]


# ------------------------------------------------------------------------------------ output lock


def test_lock_refuses_a_second_holder_at_once(tmp_path):
    out = tmp_path / "out"
    with io.output_lock(out) as folder:
        assert folder.path == out and out.is_dir()
        # another process (not this one's file descriptor) must be refused immediately
        code = ("import sys; from jcausal._src import io\n"
                "try:\n    io.output_lock(sys.argv[1]).__enter__()\n"
                "except io.OutputLockedError as e:\n    print(e); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                           timeout=60, cwd=REPO)
        assert r.returncode == 3, r.stderr
        assert "in use by another" in r.stdout and str(os.getpid()) in r.stdout
    # released: the same folder can be locked again
    with io.output_lock(out):
        pass


def test_lock_on_a_file_or_unwritable_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        with io.output_lock(tmp_path / "f"):
            pass
    ro = _read_only_folder(tmp_path)
    with pytest.raises(PermissionError, match="cannot write"):
        with io.output_lock(ro):
            pass


def _read_only_folder(tmp_path):
    """A folder this process cannot write in (root ignores modes: fall back to sysfs)."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    if Path("/sys").is_dir() and not os.access("/sys/jcausal-probe", os.F_OK):
        try:
            (Path("/sys") / ".jcausal-probe").touch()
        except OSError:
            return Path("/sys")
    pytest.skip("no read-only folder available to root")


# ------------------------------------------------------------------------------------- file sets


HELPER_DIR = str(Path(__file__).resolve().parent)


def test_file_set_publishes_stable_names(tmp_path):
    publish(tmp_path, 1)
    assert json.loads((tmp_path / "res.json").read_text())["run"] == 1
    assert io.verify_manifest(tmp_path / "res.json") == []
    publish(tmp_path, 2)
    assert json.loads((tmp_path / "res.json").read_text())["run"] == 2
    assert (tmp_path / "b.txt").read_text() == "run 2\n"
    assert io.verify_manifest(tmp_path / "res.json") == []
    # only the current run is kept
    runs = [p for p in (tmp_path / ".jcausal" / "res").iterdir() if p.name != "current"]
    assert len(runs) == 1
    # a tampered file is reported by name
    target = (tmp_path / "a.bin").resolve()
    target.write_bytes(b"tampered")
    assert any("a.bin" in p for p in io.verify_manifest(tmp_path / "res.json"))


def test_failed_stage_leaves_the_old_set(tmp_path):
    publish(tmp_path, 1)
    with pytest.raises(RuntimeError, match="boom"):
        with io.output_lock(tmp_path) as lock, lock.stage("res", ["a.bin", "b.txt", "res.json"]) as st:
            io.atomic_write_bytes(st / "a.bin", b"half")
            raise RuntimeError("boom")
    assert json.loads((tmp_path / "res.json").read_text())["run"] == 1
    assert io.verify_manifest(tmp_path / "res.json") == []
    with pytest.raises(FileNotFoundError, match="b.txt"):  # a file named but never written
        with io.output_lock(tmp_path) as lock, lock.stage("res", ["a.bin", "b.txt"]) as st:
            io.atomic_write_bytes(st / "a.bin", b"x")
    assert io.verify_manifest(tmp_path / "res.json") == []


def test_plain_files_of_an_older_version_are_adopted(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"legacy")
    (tmp_path / "res.json").write_text("{}")
    publish(tmp_path, 1)
    assert io.verify_manifest(tmp_path / "res.json") == []
    assert (tmp_path / "a.bin").is_symlink()


_KILL_SCRIPT = textwrap.dedent(f"""
    import os, signal, sys
    sys.path.insert(0, {HELPER_DIR!r})
    from publish_helper import io, publish
    n = int(sys.argv[2])
    count = [0]
    def wrap(fn):
        def inner(*a, **k):
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return inner
    for name in ("replace", "symlink", "link", "unlink", "mkdir", "rmdir", "open"):  # every change
        setattr(io.os, name, wrap(getattr(os, name)))
    publish(sys.argv[1], int(sys.argv[3]), size=int(sys.argv[4]))
""")


def _consistent_run(folder):
    """The run number of the set in ``folder`` (None if none), asserting the set is consistent."""
    if not (folder / "res.json").exists():
        assert not (folder / "a.bin").exists() and not (folder / "b.txt").exists()
        return None
    meta = json.loads((folder / "res.json").read_text())
    assert io.verify_manifest(folder / "res.json") == [], meta
    assert (folder / "b.txt").read_text() == f"run {meta['run']}\n"
    return meta["run"]


@pytest.mark.parametrize("legacy", [False, True])
def test_sigkill_at_every_step_leaves_old_or_new_set(tmp_path, legacy):
    """Kill the publishing process before each of its file-system calls in turn."""
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    seen = set()
    for n in range(1, 200):
        folder = tmp_path / f"k{n}"
        folder.mkdir()
        if legacy:  # plain files written by an older version
            (folder / "b.txt").write_text("run 0\n")
            (folder / "a.bin").write_bytes(b"zero")
            sha = {k: {"sha256": hashlib.sha256((folder / k).read_bytes()).hexdigest()}
                   for k in ("a.bin", "b.txt")}
            (folder / "res.json").write_text(json.dumps({"run": 0, "files": sha}))
        else:
            publish(folder, 0)
        r = subprocess.run([sys.executable, str(script), str(folder), str(n), "1", "1000"],
                           cwd=REPO, capture_output=True, timeout=60)
        run = _consistent_run(folder)
        assert run in (0, 1)
        seen.add(run)
        publish(folder, 2)  # the next run cleans up whatever the killed one left
        assert _consistent_run(folder) == 2
        leftovers = [p.name for p in (folder / ".jcausal" / "res").iterdir() if p.name != "current"]
        assert len(leftovers) == 1, leftovers
        if r.returncode == 0:
            break
        assert r.returncode == -signal.SIGKILL, r.stderr
    else:
        pytest.fail("the publishing script never finished")
    assert seen == {0, 1}
    print(f'{n} kill points')
    assert n > 10  # the kill points covered the whole write phase


def test_sigkill_at_random_moments(tmp_path):
    """Publish large files in a loop and kill at random moments; every state is a whole set."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {HELPER_DIR!r})
        from publish_helper import publish
        for run in range(1, 10**6):
            publish(sys.argv[1], run, size=2_000_000)
            print(run, flush=True)
    """)
    rng = random.Random(0)
    folder = tmp_path / "out"
    runs = set()
    for _ in range(8):
        p = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
        p.stdout.readline()  # one complete run
        import time

        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        runs.add(_consistent_run(folder))
    assert None not in runs


# ------------------------------------------------------------------------------------ npz reader


def test_read_npz_arrays(tmp_path):
    np.savez(tmp_path / "ok.npz", a=np.arange(3), b=np.ones((2, 2)))
    got = io.read_npz_arrays(tmp_path / "ok.npz", ["a", "b"])
    np.testing.assert_array_equal(got["a"], np.arange(3))
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        io.read_npz_arrays(tmp_path / "ok.npz", ["a", "c"])
    np.save(tmp_path / "x.npy", np.arange(3))
    with pytest.raises(ValueError, match=r"\.npy array, not an \.npz archive"):
        io.read_npz_arrays(tmp_path / "x.npy", ["a"])
    (tmp_path / "junk.npz").write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(ValueError, match="not an .npz archive") as err:
        io.read_npz_arrays(tmp_path / "junk.npz", ["a"])
    assert "allow_pickle" not in str(err.value)
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="Python objects") as err:
        io.read_npz_arrays(tmp_path / "obj.npz", ["a"])
    assert "allow_pickle" not in str(err.value)
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        io.read_npz_arrays(tmp_path / "cut.npz", ["a"])
    with pytest.raises(FileNotFoundError):
        io.read_npz_arrays(tmp_path / "none.npz", ["a"])
    assert zipfile.is_zipfile(tmp_path / "ok.npz")


def test_load_result_clear_error_on_npy_and_random_bytes(tmp_path):
    """Issue 15 item 10 (``load_result`` lives in the ACE engine; it should read through
    :func:`jcausal._src.io.read_npz_arrays`)."""
    from jcausal.ace import load_result

    np.save(tmp_path / "x.npy", np.arange(3))
    (tmp_path / "junk.npz").write_bytes(np.random.default_rng(0).bytes(200))
    for bad in (tmp_path / "x.npy", tmp_path / "junk.npz"):
        with pytest.raises(ValueError, match="npz") as err:
            load_result(bad)
        assert "allow_pickle" not in str(err.value) and "pickle" not in str(err.value).lower()


def test_file_system_without_symlinks_moves_files_json_last(tmp_path, monkeypatch):
    def no_symlinks(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(io.os, "symlink", no_symlinks)
    publish(tmp_path, 1)
    publish(tmp_path, 2)
    assert not (tmp_path / "a.bin").is_symlink()
    assert json.loads((tmp_path / "res.json").read_text())["run"] == 2
    assert io.verify_manifest(tmp_path / "res.json") == []
    assert list((tmp_path / ".jcausal" / "res").iterdir()) == []


def test_remove_stale_temps_only_ours_only_of_dead_writers(tmp_path):
    """The temporary files a killed atomic_write_bytes leaves (".{name}.{pid}.{hex}.tmp"): removed
    when their writer is gone and the name is one asked for; this process's only with own=True;
    anything else stays."""
    from jcausal._src.io import remove_stale_temps

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = int(done.stdout)  # reaped: no such process any more
    gone = [tmp_path / f".manifest.json.{dead}.0123456789ab.tmp"]
    mine = tmp_path / f".ace.npz.{os.getpid()}.abcdef012345.tmp"  # ours: e.g. a killed run's reused pid
    stay = [tmp_path / ".manifest.json.1.0123456789ab.tmp",  # pid 1 runs: a live writer
            tmp_path / f".other.json.{dead}.0123456789ab.tmp",  # a name not asked for
            tmp_path / f".manifest.json.{dead}.0123456789AB.tmp",  # not our hex
            tmp_path / f".manifest.json.{dead}.0123456789ab.part",
            tmp_path / "manifest.json", tmp_path / "x.tmp"]
    for p in [*gone, mine, *stay]:
        p.write_bytes(b"x")
    (tmp_path / f".ace.json.{dead}.0123456789ab.tmp").mkdir()  # a folder is never removed
    ours = ("manifest.json", "ace.npz", "ace.json").__contains__
    assert remove_stale_temps(tmp_path, ours) == gone
    assert mine.exists()
    assert remove_stale_temps(tmp_path, ours, own=True) == [mine]
    assert not any(p.exists() for p in [*gone, mine]) and all(p.exists() for p in stay)
    assert (tmp_path / f".ace.json.{dead}.0123456789ab.tmp").is_dir()
    assert remove_stale_temps(tmp_path / "missing") == []
    assert sorted(remove_stale_temps(tmp_path)) == sorted([stay[1]])  # every name: the other json too
