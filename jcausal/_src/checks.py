"""Entry-point checks of user arrays: NaN/inf refused with a message naming what and how many.

One reduction per array, outside compiled hot paths: jax arrays are reduced on their device (only
two counts come back to the host), numpy arrays on the host; traced values are not checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["nonfinite_counts", "require_finite"]


def nonfinite_counts(a) -> tuple[int, int]:
    """``(rows, entries)``: how many examples (indices of axis 0) and how many entries of ``a``
    ``(n, ...)`` are NaN or +-inf. ``(0, 0)`` for integer and boolean arrays; a scalar is one row."""
    xp = jnp if isinstance(a, jax.Array) else np
    a = a if isinstance(a, jax.Array) else np.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        return 0, 0
    bad = ~xp.isfinite(a)
    if a.ndim == 0:
        return int(bad), int(bad)
    rows = xp.any(bad.reshape(bad.shape[0], -1), axis=1) if a.size else bad.reshape(-1)
    return int(xp.sum(rows)), int(xp.sum(bad))


def require_finite(a, name: str, *, rows: str | None = "rows", fix: str = "") -> None:
    """Raise ``ValueError`` if ``a`` holds NaN/inf, naming ``name``, the number of entries and of
    ``rows`` (what axis 0 counts: rows, examples...; ``None`` for ONE example, whose entries are
    counted against its size) and ``fix`` (what to do). A traced value (under ``jit``/``vmap``/
    ``grad``) is not checked."""
    if isinstance(a, jax.core.Tracer):
        return
    r, e = nonfinite_counts(a)
    if e:
        entries = f"{e} non-finite entr{'y' if e == 1 else 'ies'}"
        if rows is None or np.ndim(a) == 0:
            where = f"{entries} of {int(np.size(a))}"
        else:
            where = f"{entries} in {r} of its {np.shape(a)[0]} {rows}"
        raise ValueError(f"{name} holds NaN/inf: {where}{'; ' + fix if fix else ''}")
