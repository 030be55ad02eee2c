"""The ``jcausal`` command: one module per command, each exposing ``register(subparsers)``.

Commands: ``train`` (:mod:`jcausal.cli.train`), ``ace`` (:mod:`jcausal.cli.ace`), and, where
installed, ``gce`` and ``tracer``. The library never imports this package.

A refused request (bad option, bad data, locked or unwritable output folder, mismatched
checkpoint) prints one ``jcausal: ...`` line on stderr and exits with status 2; ``--debug`` (or
``JCAUSAL_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["CLIError", "build_parser", "main"]

# Each module registers its own subcommand; heavy imports happen inside the command functions.
COMMANDS = ("train", "ace", "gce", "tracer")


class CLIError(Exception):
    """A request a command refuses: printed as one ``jcausal: ...`` line, exit status 2."""


def _version() -> str:
    from jcausal import __version__

    return __version__


def add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on a subcommand too (the top-level flag is kept when it is not given there)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jcausal", description="Causal explanations of neural networks in JAX.")
    p.add_argument("--version", action="version", version=f"jcausal {_version()}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"jcausal.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"jcausal.cli.{name}":
                continue  # command not written yet
            raise
        mod.register(sub)
    return p


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror + (f": {err.filename}" if err.filename else "")
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())  # one line


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False) or os.environ.get("JCAUSAL_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("jcausal: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        from jcausal._src.io import OutputLockedError

        if isinstance(err, (CLIError, ValueError, OSError, OutputLockedError)):
            print(f"jcausal: {_message(err)}", file=sys.stderr)
            return 2
        print(f"jcausal: internal error ({type(err).__name__}: {_message(err)}); run again with "
              "--debug for the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
