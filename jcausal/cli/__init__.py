"""The ``jcausal`` command: one module per command, each exposing ``register(subparsers)``, all
through one core (:mod:`jcausal.cli.core`).

Commands: ``train``, ``ace``, ``gce`` and ``tracer``. Every command validates its arguments before
any work, locks its ``--out`` folder for the whole run, publishes a run's files together, shows
progress unless ``--quiet``, and on a refused request prints one ``jcausal: ...`` line and exits
with status 2 (``--debug`` or ``JCAUSAL_DEBUG=1`` also prints the traceback; the exit status stays the
same); a training run that did not happen or went non-finite exits with status 3. ``jcausal`` with no
command exits with status 2; a ``SystemExit`` raised inside a run (a user's module calling
``exit()``) is an error (status 2), never a success. The library never imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jcausal.cli.core import (
    EXIT_REFUSED,
    EXIT_TRAINING,
    CLIError,
    Parser,
    TrainingFailed,
    add_debug,
    debug_enabled,
)

__all__ = ["CLIError", "add_debug", "build_parser", "main"]

COMMANDS = ("train", "ace", "gce", "tracer")  # each module registers its own subcommand


def _version() -> str:
    from jcausal import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="jcausal", description="Causal explanations of neural networks in JAX.")
    p.add_argument("--version", action="version", version=f"jcausal {_version()}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"jcausal.cli.{name}").register(sub)
    return p


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror + (f": {err.filename}" if err.filename else "")
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())  # one line


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help and --version exit 0 as usual; a refusal returns 2
        if exit_.code in (0, None):
            raise
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_REFUSED
    if not getattr(args, "func", None):  # `jcausal` alone: a usage error, not a success
        parser.print_help(sys.stderr)
        print("jcausal: name a command (train, ace, gce, tracer)", file=sys.stderr)
        return EXIT_REFUSED
    debug = debug_enabled(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _traceback(debug)
        print("jcausal: interrupted", file=sys.stderr)
        return 130
    except SystemExit as err:  # raised inside the run: a user's module calling exit() is never success
        _traceback(debug)
        print(f"jcausal: the run was stopped by SystemExit({err.code!r}) raised inside it (a user's module "
              "calling sys.exit() or exit()?); it did not finish", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as err:
        _traceback(debug)  # --debug changes only what is printed, never the exit status
        from jcausal._src.io import OutputLockedError

        fit = sys.modules.get("jcausal._src.fit")  # loaded by any trainer (a refusal imports no jax)
        if isinstance(err, TrainingFailed) or (fit is not None and isinstance(err, fit.TrainingDiverged)):
            # failed training: status 3 in every command
            print(f"jcausal: training failed: {_message(err)}", file=sys.stderr)
            return EXIT_TRAINING
        if isinstance(err, (CLIError, ValueError, OSError, OutputLockedError, MemoryError)):
            print(f"jcausal: {_message(err)}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"jcausal: internal error ({type(err).__name__}: {_message(err)})"
              + ("" if debug else "; run again with --debug for the traceback"), file=sys.stderr)
        return 1


def _traceback(debug: bool) -> None:
    """With ``--debug``, the traceback of the exception being handled (stderr)."""
    if debug:
        import traceback

        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
