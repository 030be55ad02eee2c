"""Entry-point checks of user arrays: NaN/inf refused with a message naming what and how many.

One reduction per array, outside compiled hot paths: jax arrays are reduced on their device (only
two counts come back to the host), numpy arrays on the host; traced values are not checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["class_indices", "feature_indices", "nonfinite_counts", "require_finite", "require_int"]


def require_int(value, name: str, *, minimum: int = 1, none_ok: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int (Python or numpy; ``True`` is not one) of at
    least ``minimum``, or ``None`` when ``none_ok``: the one check of counts, sizes and batch sizes.

    Examples:
      >>> from jcausal._src.checks import require_int
      >>> require_int(3, "steps")
      >>> require_int(2.0, "steps")
      Traceback (most recent call last):
      ValueError: steps must be an int >= 1, got 2.0
    """
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{' or None' if none_ok else ''}, got {value!r}")


def feature_indices(features, k: int, name: str = "features") -> np.ndarray:
    """``features`` as ``(F,)`` int indices into ``k`` input features (``None``: all ``k``): the one
    check of feature indices. Refuses anything but a non-empty 1-d sequence of ints, indices outside
    ``[0, k)`` and duplicates, naming them.

    Examples:
      >>> from jcausal._src.checks import feature_indices
      >>> feature_indices([2, 0], 3).tolist()
      [2, 0]
      >>> feature_indices([0, 0], 3)
      Traceback (most recent call last):
      ValueError: features contains duplicates: [0]
    """
    if features is None:
        return np.arange(k)
    idx = np.atleast_1d(np.asarray(features))
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-d sequence of ints, got {features!r}")
    bad = idx[(idx < 0) | (idx >= k)]
    if bad.size:
        raise ValueError(f"{name} {bad.tolist()} out of range for {k} input features")
    uniq, counts = np.unique(idx, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"{name} contains duplicates: {uniq[counts > 1].tolist()}")
    return idx


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


def require_real(a, name: str, *, floating: bool = False) -> None:
    """Raise ``TypeError`` unless ``a`` holds real numbers (``floating``: real floating-point
    numbers): booleans, complex numbers (a cast would drop the imaginary part with a mere warning),
    strings and objects are refused, naming ``name`` and the dtype."""
    try:
        dt = np.dtype(a.dtype)
    except (AttributeError, TypeError):  # no dtype, or another library's (a torch tensor's)
        dt = np.asarray(a).dtype
    kind = "real floating-point" if floating else "real"
    ok = np.issubdtype(dt, np.floating) if floating else (
        np.issubdtype(dt, np.number) and not np.issubdtype(dt, np.complexfloating))  # bool is no number
    if not ok:
        hint = " (cast it: x.astype(np.float32))" if floating and np.issubdtype(dt, np.integer) else ""
        raise TypeError(f"{name} must hold {kind} numbers, got dtype {dt}{hint}")


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


def class_indices(targets, num_classes: int, name: str = "targets") -> np.ndarray:
    """``targets`` as ``(n,)`` int64 class indices, refusing anything that is not one exactly.

    Integer arrays pass through; floats must be finite whole numbers (``1.0`` is class 1, ``1.7``
    is refused, never truncated); every value must lie in ``[0, num_classes)``.

    Raises:
      ValueError: the first bad entry, by position and value, and what a class index is.
    """
    t = np.asarray(targets).reshape(-1)
    rule = f"{name} must be integer class indices in [0, {num_classes})"
    if t.size == 0:
        return t.astype(np.int64)
    if t.dtype == bool or not (np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
        raise ValueError(f"{rule}, got an array of dtype {t.dtype}")
    if np.issubdtype(t.dtype, np.floating):
        bad = ~np.isfinite(t) | (np.floor(np.where(np.isfinite(t), t, 0.0)) != t)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{rule}; {name}[{i}] = {t[i].item()!r} is not a whole number (a class index is "
                             "never rounded or truncated)")
    out = np.zeros(t.shape, np.int64)
    inside = (t >= 0) & (t < num_classes)
    if not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        raise ValueError(f"{rule}; {name}[{i}] = {t[i].item()!r} is outside it "
                         f"({int((~inside).sum())} of the {t.size} {name} are)")
    out[:] = t
    return out
