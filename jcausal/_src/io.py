"""File outputs that survive kills and concurrent runs.

- :func:`atomic_write_bytes` (and :func:`atomic_write_json`, :func:`atomic_savefig`): a unique
  temporary file in the same folder, fsync, rename. A crash leaves the old file or the new one,
  never a partial one; the file gets the permissions a normal ``open(path, "wb")`` would give
  (``0o666`` minus the umask for a new file, the old mode for a replaced one).
- :func:`output_lock`: an exclusive ``flock`` on an output folder; a second process is refused at
  once with :class:`OutputLockedError` naming the holder's pid.
- :meth:`OutputFolder.stage`: a run's files published together. The files are written into a
  private run folder ``<out>/.jcausal/<set>/<run>/``; one atomic rename of the symlink
  ``<out>/.jcausal/<set>/current`` then switches every stable name ``<out>/<file>`` (a symlink
  through ``current``) from the old set to the new one at once. A SIGKILL at any moment leaves
  the old set or the new one, never a mix. :func:`file_manifest` / :func:`verify_manifest` record
  and check the SHA-256 of a set's files (the set's JSON names them).
- :func:`remove_stale_temps`: the temporary files of killed writers, removed (only ours, only of
  processes no longer running).
- :func:`read_npz_arrays`: a ``.npz`` reader with clear errors for ``.npy`` files, corrupt files
  and pickled objects.

POSIX only (``fcntl``, symlinks).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "OutputFolder",
    "OutputLockedError",
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_manifest",
    "file_sha256",
    "output_lock",
    "read_npz_arrays",
    "remove_stale_temps",
    "verify_manifest",
]

STATE_DIR = ".jcausal"  # hidden folder of an output folder: lock file and published runs
LOCK_NAME = "lock"
CURRENT = "current"


def _unique(folder: Path, name: str, suffix: str = ".tmp") -> Path:
    return folder / f".{name}.{os.getpid()}.{secrets.token_hex(6)}{suffix}"


# names made by _unique(): ".{name}.{pid}.{12 hex digits}.tmp" (atomic_write_bytes) or ".link"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.[0-9a-f]{12}\.(?P<kind>tmp|link)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists (another user's), or cannot tell: leave it
    return True


def remove_stale_temps(folder: str | os.PathLike, names: Callable[[str], bool] | None = None, *,
                       own: bool = False) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder`` (and its ``.jcausal``
    state folder): only names made by :func:`atomic_write_bytes` and the publishing links, whose
    writing process no longer runs. Call it under :func:`output_lock`.

    Args:
      folder: the folder.
      names: only the temporaries of files whose name this accepts (default: all).
      own: also those named with this process's pid: right when the caller knows none of its
        writes is in flight (a job starting), e.g. after a killed run whose pid this run reuses
        (containers start processes at the same small pids).

    Returns:
      The paths removed.
    """
    gone = []
    for d in (Path(folder), Path(folder) / STATE_DIR):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            m = _TEMP.match(p.name)
            if m is None or (names is not None and not names(m["name"])):
                continue
            if p.is_dir() and not p.is_symlink():
                continue
            pid = int(m["pid"])
            if (pid == os.getpid() and not own) or (pid != os.getpid() and _alive(pid)):
                continue
            with contextlib.suppress(OSError):  # gone already, or another user's file
                p.unlink()
                gone.append(p)
    return gone


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = _fsync_dir  # public name: a folder's entries made durable (used by jcausal.ace.jobs)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a uniquely named temporary file in the same folder,
    fsync, rename. A crash leaves either the old file or the new one, never a partial one.

    The new file gets the mode a normal write would: ``0o666 & ~umask`` (the kernel applies the
    umask, as for ``open(path, "wb")``), or the mode of the file it replaces. A symlink at ``path``
    is replaced, not followed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old_mode = os.stat(path, follow_symlinks=False).st_mode
        keep = old_mode & 0o7777 if not os.path.islink(path) else None
    except FileNotFoundError:
        keep = None
    while True:
        tmp = _unique(path.parent, path.name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            if keep is not None:
                os.fchmod(fh.fileno(), keep)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj, *, indent: int = 2) -> None:
    """``json.dumps(obj)`` (UTF-8, trailing newline) written with :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())


def atomic_savefig(fig, path: str | os.PathLike, **kw) -> None:
    """Save a matplotlib figure atomically: ``fig.savefig`` into memory, then
    :func:`atomic_write_bytes`. The format comes from the suffix unless ``format=`` is given;
    ``kw`` goes to ``savefig`` (``dpi``, ``bbox_inches``, ...)."""
    path = Path(path)
    kw.setdefault("format", path.suffix.lstrip(".").lower() or "png")
    buf = io.BytesIO()
    fig.savefig(buf, **kw)
    atomic_write_bytes(path, buf.getvalue())


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (symlinks followed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_manifest(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, dict]:
    """``{name: {"sha256": ..., "bytes": ...}}`` for files ``folder / name``: what a set's JSON
    records about the other files of the set."""
    folder = Path(folder)
    return {n: {"sha256": file_sha256(folder / n), "bytes": (folder / n).stat().st_size} for n in names}


def verify_manifest(json_path: str | os.PathLike, key: str = "files") -> list[str]:
    """Check the files a set's JSON names (``json[key]``, as written by :func:`file_manifest`,
    relative to the JSON's folder) against their SHA-256. Returns the problems, ``[]`` if none."""
    json_path = Path(json_path)
    try:
        manifest = json.loads(json_path.read_text())[key]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{json_path}: cannot read its manifest {key!r} ({err})"]
    problems = []
    for name, rec in manifest.items():
        p = json_path.parent / name
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif file_sha256(p) != rec["sha256"]:
            problems.append(f"{p}: SHA-256 differs from the one recorded in {json_path.name}")
    return problems


# ----------------------------------------------------------------------------------- output lock


class OutputLockedError(RuntimeError):
    """Another process holds the lock on an output folder."""


class OutputFolder:
    """A locked output folder (yielded by :func:`output_lock`); :meth:`stage` publishes file sets."""

    def __init__(self, path: Path, symlinks: bool = True):
        self.path = path
        self.state = path / STATE_DIR
        self.symlinks = symlinks  # False on file systems without symlinks: see stage()

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.path)!r})"

    @contextlib.contextmanager
    def stage(self, name: str, filenames: Iterable[str]) -> Iterator[Path]:
        """Stage the files of one run and publish them together.

        Yields a private, empty run folder; write every file of ``filenames`` into it (with the
        atomic writers, ideally the set's JSON last, naming the others' checksums). On a clean exit
        the set is published: ``self.path / filename`` then reads the new files, all switched by
        one atomic rename. On an exception, or if a named file was not written, nothing changes
        and the run folder is removed.

        On a file system without symlinks (``self.symlinks`` False) the files are moved into place
        one by one in the order of ``filenames`` (put the JSON naming the others' checksums last):
        each file is atomic, and a kill between two moves is detected by the checksums, not
        prevented.

        Args:
          name: the set's name (e.g. ``"ace_iris"``); runs of the same name replace each other.
          filenames: plain file names (no folders) making up the set.
        """
        filenames = list(filenames)
        for n in [name, *filenames]:
            if not n or "/" in n or n.startswith(".") or n in (STATE_DIR, CURRENT):
                raise ValueError(f"set and file names must be plain visible names, got {n!r}")
        root = self.state / name
        root.mkdir(parents=True, exist_ok=True)
        run = root / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(4)}"
        run.mkdir()
        try:
            yield run
            missing = [n for n in filenames if not (run / n).is_file()]
            if missing:
                raise FileNotFoundError(f"set {name!r}: files {missing} were not written")
            _fsync_dir(run)
            if self.symlinks:
                self._publish(root, run, filenames)
            else:
                for n in filenames:
                    os.replace(run / n, self.path / n)
                _fsync_dir(self.path)
                shutil.rmtree(run, ignore_errors=True)
        except BaseException:
            shutil.rmtree(run, ignore_errors=True)
            raise
        self._collect(root)

    def _switch(self, root: Path, run: Path) -> None:
        tmp = _unique(root, CURRENT, ".link")
        os.symlink(run.name, tmp)
        os.replace(tmp, root / CURRENT)
        _fsync_dir(root)

    def _link(self, root: Path, filename: str) -> None:
        target = os.path.join(STATE_DIR, root.name, CURRENT, filename)
        dest = self.path / filename
        if os.path.islink(dest) and os.readlink(dest) == target:
            return
        if dest.is_dir() and not dest.is_symlink():
            raise IsADirectoryError(f"{dest} is a folder; cannot publish a file of that name")
        tmp = _unique(self.path, filename, ".link")
        os.symlink(target, tmp)
        os.replace(tmp, dest)

    def _publish(self, root: Path, run: Path, filenames: list[str]) -> None:
        names = set(filenames)
        if (root / CURRENT).is_dir():
            names |= set(os.listdir(root / CURRENT))
        plain = [n for n in sorted(names) if (self.path / n).exists() and not self._ours(root, n)]
        if plain:
            # Files of an older layout (or written by hand): adopt the visible files as the current
            # set first, so that replacing them by symlinks changes nothing anyone can read.
            legacy = root / f"adopted-{os.getpid()}-{secrets.token_hex(4)}"
            legacy.mkdir()
            for n in sorted(names):
                src = self.path / n
                if src.is_file():
                    try:
                        os.link(src.resolve(), legacy / n)
                    except OSError:
                        shutil.copy2(src, legacy / n)
            _fsync_dir(legacy)
            self._switch(root, legacy)
            for n in plain:
                self._link(root, n)
            _fsync_dir(self.path)
        # Links for new names dangle until the switch: before it, the old set is what is visible.
        for n in filenames:
            self._link(root, n)
        _fsync_dir(self.path)
        self._switch(root, run)

    def _ours(self, root: Path, filename: str) -> bool:
        dest = self.path / filename
        return os.path.islink(dest) and os.readlink(dest) == os.path.join(
            STATE_DIR, root.name, CURRENT, filename)

    def _collect(self, root: Path) -> None:
        """Remove every run folder and temporary link of ``root`` but the current one."""
        try:
            keep = os.readlink(root / CURRENT)
        except OSError:
            keep = None  # no symlinks here: no run folder is in use once published
        for p in root.iterdir():
            if p.name in (CURRENT, keep):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
        for p in [*self.path.glob(".*.link"), *self.state.glob(".*.link")]:  # left by a killed run
            with contextlib.suppress(OSError):
                p.unlink()


def _symlinks_work(folder: Path) -> bool:
    probe = _unique(folder, "probe", ".link")
    try:
        os.symlink("probe", probe)
    except OSError:
        return False
    os.unlink(probe)
    return True


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[OutputFolder]:
    """Hold an exclusive lock on an output folder (created if needed) for the ``with`` block.

    The lock is ``fcntl.flock`` on ``<folder>/.jcausal/lock``: released by the kernel when the
    process ends, however it ends. A second process asking for it is refused at once.

    Raises:
      NotADirectoryError: ``folder`` exists and is not a folder.
      PermissionError: the folder cannot be created or written in.
      OutputLockedError: another process holds the lock (the message names its pid).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output folder {folder} exists and is not a folder")
    state = folder / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
        fd = os.open(state / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionError(err.errno, f"cannot write in output folder {folder}: "
                                             f"{os.strerror(err.errno)}") from None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise OutputLockedError(
                f"output folder {folder} is in use by another jcausal run (pid {holder}); wait for "
                "it to finish or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield OutputFolder(folder, symlinks=_symlinks_work(state))
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ npz reader


def read_npz_arrays(path: str | os.PathLike, required: Iterable[str] = ()) -> dict:
    """Read every array of a ``.npz`` archive, safely (no pickle), with clear errors.

    Args:
      path: the ``.npz`` file.
      required: names that must be present.

    Returns:
      ``{name: array}`` with every array of the archive loaded into memory.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a ``.npy`` file, not a zip archive, a truncated or corrupt archive, arrays of
        Python objects (pickles; never loaded), or required names missing.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head == b"\x93NUMPY":
        raise ValueError(f"{path} is a .npy array, not an .npz archive of named arrays")
    if not head.startswith(b"PK"):
        raise ValueError(f"{path} is not an .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {n: z[n] for n in z.files}
    except ValueError as err:
        if "pickle" in str(err).lower() or "object arrays" in str(err).lower():
            raise ValueError(f"{path} holds arrays of Python objects, which jcausal never writes and "
                             "does not load (loading them could run code)") from None
        raise ValueError(f"{path} is truncated or corrupt ({err})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as err:
        raise ValueError(f"{path} is truncated or corrupt ({type(err).__name__}: {err})") from None
    missing = [n for n in required if n not in arrays]
    if missing:
        raise ValueError(f"{path}: arrays missing {missing} (has {sorted(arrays)})")
    return arrays
