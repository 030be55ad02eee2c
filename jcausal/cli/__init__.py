"""The ``jcausal`` command: one module per command, each exposing ``register(subparsers)``.

Commands: ``train`` (:mod:`jcausal.cli.train`), ``ace`` (:mod:`jcausal.cli.ace`), and, where
installed, ``gce`` and ``tracer``. The library never imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["build_parser", "main"]

# Each module registers its own subcommand; heavy imports happen inside the command functions.
COMMANDS = ("train", "ace", "gce", "tracer")


def _version() -> str:
    from jcausal import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jcausal", description="Causal explanations of neural networks in JAX.")
    p.add_argument("--version", action="version", version=f"jcausal {_version()}")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
