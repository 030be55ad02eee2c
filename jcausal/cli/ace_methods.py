"""What ``jcausal ace`` knows of the estimators and of memory before it imports jax: the
``--method`` names and their kinds, the methods that take ``--rank``, the default method, and the
memory estimate of a run. :mod:`jcausal.cli.ace` and :mod:`jcausal.cli.ace_jobs` both read it (it
imports neither)."""

from __future__ import annotations

import sys

from jcausal.cli.core import CLIError, available_bytes

__all__ = ["DEFAULT_METHOD", "METHOD_KINDS", "RANK_METHODS", "averages_rows", "check_memory",
           "check_rank_method", "chosen_method", "estimate_bytes", "method_kinds", "rank_methods"]

# The estimator registry (jcausal.ace.estimators) as a fresh process sees it, written out so that
# parsing and every check before the work import no jax (``--help`` and a refused option answer at
# once): each ``--method`` name with its kind ("feature": averages the data rows, eqn 2; "point":
# eqn 4 from the moments), the methods that take ``rank``, and the default with rows at hand.
# tests/test_cli.py keeps these equal to the registry. A process that has imported the registry
# (and perhaps registered estimators of its own) reads the registry itself.
METHOD_KINDS = {"definition": "feature", "directional": "point", "exact": "point", "hutchinson": "point",
                "gauss_newton": "point", "finite_difference": "point", "monte_carlo": "feature"}
RANK_METHODS = ("directional", "finite_difference", "gauss_newton", "hutchinson")
DEFAULT_METHOD = "definition"


def _registry():
    """``jcausal.ace.estimators`` if this process has imported it, else ``None``."""
    return sys.modules.get("jcausal.ace.estimators")


def method_kinds() -> dict[str, str]:
    """Every ``--method`` name -> its kind (``"feature"`` or ``"point"``)."""
    E = _registry()
    if E is None:
        return dict(METHOD_KINDS)
    return {n: E.lookup(n).kind for n in E.method_names()}


def chosen_method(args) -> str:
    """The ``--method`` asked for, or the default with data rows at hand (eqn 2)."""
    return args.method or DEFAULT_METHOD


def averages_rows(method: str) -> bool:
    """Whether the estimator registered as ``method`` averages the data rows (eqn 2)."""
    return method_kinds()[method] == "feature"


def rank_methods() -> list[str]:
    """The estimators that take ``--rank`` (a covariance factor truncation)."""
    E = _registry()
    if E is None:
        return list(RANK_METHODS)
    return sorted(n for n in E.REGISTRY if E.takes_setting(n, "rank"))


def check_rank_method(args) -> None:
    method = chosen_method(args)
    if args.rank is not None and method not in rank_methods():
        raise CLIError(f"--rank truncates the covariance factor of the eqn-4 methods "
                       f"({', '.join('--method ' + m for m in rank_methods())}); --method "
                       f"{method} (eqn 2) uses every direction: drop --rank or "
                       "choose one of those methods")


def check_memory(args, num_features: int, num_outputs: int, rows: int = 0) -> None:
    """Refuse a grid whose arrays alone would not fit in memory (estimated before any work)."""
    need = estimate_bytes(num_features, args.num_alphas, num_outputs, rows)
    have = available_bytes()
    if have and need > have // 2:
        raise CLIError(f"--num-alphas {args.num_alphas} x {num_features} features x {num_outputs} outputs "
                       f"needs about {need / 2**30:.1f} GiB (expectations, standard errors and the "
                       f"per-feature evaluations), more than half the {have / 2**30:.1f} GiB available: "
                       "use fewer --num-alphas (Phase II fits a polynomial of order <= --max-order; 20-50 "
                       "alphas are plenty) or fewer --features")


def estimate_bytes(num_features: int, num_alphas: int, num_outputs: int, rows: int = 0) -> int:
    """Bytes of the host and device arrays of a Phase I + II run: the ``(F, A, m)`` expectations and
    their standard errors (float64 copies for the table), the alphas, and for eqn 2 one feature's
    ``(A, m)`` partial sums per row block (``rows`` > 0)."""
    grid = num_features * num_alphas
    return int(grid * num_outputs * 8 * 6 + grid * 8 * 2 + (num_alphas * num_outputs * 4 * 64 if rows else 0))
