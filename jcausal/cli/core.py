"""The one core every ``jcausal`` command goes through.

A command is registered with :func:`command`, which gives it the same behaviour as every other:

1. ``--out``, ``--seed``, ``--quiet`` (no progress bars) and ``--debug`` (the traceback instead of
   the one-line message), with the same meaning everywhere.
2. Every argument is validated before any work: option types at parse time (:func:`positive_int`,
   :func:`positive_float`, ... name the flag), then the command's ``check(args)`` for what needs
   several options or the data. A refusal prints one ``jcausal: ...`` line and exits with 2.
3. The output folder is locked for the whole run (a second run into it is refused at once, never
   mixed in), and checked writable, before the work starts.
4. ``run(args, folder, prepared)`` does the work and publishes its files together with
   :meth:`jcausal._src.io.OutputFolder.stage` (or :func:`publish`), so a kill leaves the old set or
   the new one.
5. A training run that did not happen or went non-finite raises :class:`TrainingFailed`: exit 3,
   naming the step.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CLIError",
    "Parser",
    "TrainingFailed",
    "add_debug",
    "command",
    "fraction",
    "nonneg_int",
    "positive_float",
    "positive_int",
    "publish",
    "require_trained",
    "reuse_checkpoint",
    "seed_int",
]

EXIT_REFUSED = 2
EXIT_TRAINING = 3


class CLIError(Exception):
    """A request a command refuses: printed as one ``jcausal: ...`` line, exit status 2."""


class TrainingFailed(CLIError):
    """Training did not happen or went non-finite: exit status 3, the step named."""


class Parser(argparse.ArgumentParser):
    """``argparse`` with the core's error format: one ``jcausal: ...`` line, exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        print(f"jcausal: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)


# ------------------------------------------------------------------------ option types (parse time)


def _number(kind, text: str):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                          f"got {text!r}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def _at_least(kind, low, *, strict: bool = False):
    """An option type: a ``kind`` number ``>= low`` (``> low`` when ``strict``)."""
    op = ">" if strict else ">="

    def check(text: str):
        v = _number(kind, text)
        if v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"must be {op} {low:g}, got {v:g}")
        return v

    return check


positive_int = _at_least(int, 1)
nonneg_int = _at_least(int, 0)
positive_float = _at_least(float, 0, strict=True)
nonneg_float = _at_least(float, 0)


def finite_float(text: str) -> float:
    """Any finite number."""
    return _number(float, text)


def seed_int(text: str) -> int:
    """A seed every generator takes (JAX keys, NumPy, Flax ``Rngs``)."""
    v = _number(int, text)
    if not 0 <= v < 2**31:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**31 - 1], got {v}")
    return v


# room left in a path for what the run writes under --out: the lock, the staging folders of a set
# (``.<name>.<random>.stage/<file>``) and the files' temporary names
_OUT_ROOM = 160
_NAME_MAX = 255


def out_folder(text: str) -> str:
    """An output folder that a run can write into: refused at parse time when empty (it would
    write into the working folder: pass ``.`` for that) or when the run's files under it could not
    be named (a folder name over 255 bytes, or a path near the system's limit), never after the
    work."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder (an empty name would write into the working "
                                          "folder; pass . for that)")
    path = Path(text).expanduser().absolute()
    long = [part for part in path.parts if len(part.encode()) > _NAME_MAX]
    if long:
        raise argparse.ArgumentTypeError(f"a folder name of {len(long[0].encode())} bytes is over the "
                                          f"{_NAME_MAX} a file system allows")
    limit = _path_max(path)
    if len(str(path).encode()) + _OUT_ROOM > limit:
        raise argparse.ArgumentTypeError(f"a path of {len(str(path).encode())} bytes leaves no room for the "
                                          f"run's files (the system allows {limit}); choose a shorter one")
    return text


def _path_max(path: Path) -> int:
    for p in (path, *path.parents):
        if p.exists():
            try:
                return int(os.pathconf(p, "PC_PATH_MAX"))
            except (OSError, ValueError, AttributeError):
                break
    return 4096


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    v = _number(float, text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v:g}")
    return v


def available_bytes() -> int:
    """The memory available now (bytes; 0 when the system does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


# ----------------------------------------------------------------------------------- registration


def add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on a subcommand too (the top-level flag is kept when it is not given there)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")


def command(sub, name: str, *, help: str, description: str, run: Callable, out: str,
            check: Callable | None = None, locks: Callable | None = None, seed: bool = True,
            **kw) -> argparse.ArgumentParser:
    """Register a command whose work is ``run(args, folder, prepared)``.

    Args:
      sub: the subparsers to add to.
      name, help, description: as ``add_parser``.
      run: the work, called under the lock of ``--out`` with the locked
        :class:`jcausal._src.io.OutputFolder` and what ``check`` returned.
      out: the default ``--out``.
      check: ``check(args) -> prepared``: everything that can be refused before any work (raise
        :class:`CLIError`).
      locks: ``locks(args) -> bool``: whether this process locks ``--out`` (default always; a
        distributed job's workers do not).
      seed: add ``--seed``.
    """
    p = sub.add_parser(name, help=help, description=description, **kw)
    p.add_argument("--out", type=out_folder, default=out,
                   help="output folder, locked while the run lasts (default: %(default)s)")
    if seed:
        p.add_argument("--seed", type=seed_int, default=0, help="seed, 0 to 2**31 - 1 (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_debug(p)
    p.set_defaults(func=_runner(run, check, locks))
    return p


def _runner(run, check, locks):
    def go(args) -> int:
        prepared = check(args) if check is not None else None
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise CLIError(f"--out {out} exists and is not a folder")
        if locks is not None and not locks(args):
            return run(args, None, prepared)
        from jcausal._src.io import output_lock, remove_stale_temps

        with output_lock(out) as folder:
            remove_stale_temps(out)
            return run(args, folder, prepared)

    return go


# -------------------------------------------------------------------------------- results, models


def publish(folder, name: str, files: Mapping[str, Any], summary: dict) -> None:
    """Publish one run's files together: ``files`` maps file names to a matplotlib ``Figure``
    (saved as PNG and closed) or ``bytes``; ``summary`` is written last as ``<name>.json`` with the
    SHA-256 of every other file (``summary["files"]``). A kill at any moment leaves the previous
    set or this one."""
    import matplotlib.pyplot as plt

    from jcausal._src.io import atomic_savefig, atomic_write_bytes, atomic_write_json, file_manifest

    names = list(files)
    try:
        with folder.stage(name, [*names, f"{name}.json"]) as stage:
            for n, content in files.items():
                if isinstance(content, bytes):
                    atomic_write_bytes(stage / n, content)
                else:
                    atomic_savefig(content, stage / n, dpi=110)
            atomic_write_json(stage / f"{name}.json", {**summary, "files": file_manifest(stage, names)})
    finally:
        for content in files.values():
            if not isinstance(content, bytes):
                plt.close(content)


def reuse_checkpoint(path: Path, model, record: dict, *, remedy: str) -> bool:
    """Load ``path`` into ``model`` when it exists and was trained with the settings ``record``
    (seed, epochs, ...: saved with it by :func:`save_checkpoint`); ``False`` when there is none.

    Raises:
      CLIError: the checkpoint records other settings (they are named, with ``remedy``), or does
        not fit the model.
    """
    from jcausal.models import CheckpointMismatchError, load
    from jcausal.models.checkpoint import metadata_differences, read_metadata

    if not path.is_file():
        return False
    diffs = metadata_differences(read_metadata(path), record)
    if diffs:
        raise CLIError(f"{path} was trained with other settings ({'; '.join(diffs)}): {remedy}")
    try:
        load(path, model)
    except CheckpointMismatchError as err:
        raise CLIError(str(err)) from None
    return True


def partial_checkpoint(path: Path) -> Path:
    """Where a command's training writes its periodic checkpoints: beside ``path`` (``name.partial.msgpack``),
    never at ``path`` itself. ``path`` is written once, complete and with its settings
    (:func:`finish_checkpoint`), so a run killed during training leaves nothing a rerun refuses: the
    same command trains again from the start."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def finish_checkpoint(path: Path, model, record: dict) -> None:
    """Save the trained ``model`` at ``path`` with the settings ``record`` (what a rerun compares), then
    remove its periodic checkpoint."""
    from jcausal.models import save

    save(path, model, metadata=record)
    partial_checkpoint(path).unlink(missing_ok=True)


def require_trained(steps_done: int, nonfinite_step: int | None, *, what: str, kept: str = "") -> None:
    """Refuse a training run that did not happen or went non-finite (exit status 3)."""
    if nonfinite_step is not None:
        raise TrainingFailed(f"{what}: the loss went non-finite at step {nonfinite_step}"
                             + (f"; the last good state ({steps_done} steps) is kept in {kept}" if kept
                                else "") + "; lower the learning rate or check the data")
    if steps_done < 1:
        raise TrainingFailed(f"{what}: no training step was taken")


def debug_enabled(args) -> bool:
    return getattr(args, "debug", False) or os.environ.get("JCAUSAL_DEBUG", "") not in ("", "0")
