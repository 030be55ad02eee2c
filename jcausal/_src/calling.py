"""How a user callable is called: ``f(x)`` or ``f(params, x)``, and the split model
``first(params, x)`` (an affine map) followed by ``rest(params, z)``.

Compiled programs are cached on the callable's identity (it is a static argument of ``jit``), so a
callable that *closes over* parameters keeps returning results for the parameters it was first
compiled with. :func:`warn_closed_over_arrays` detects that case and warns once, naming ``params=``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Model", "Split", "unwrap_model", "warn_closed_over_arrays"]


class Split(NamedTuple):
    """A model handed as its first affine map and the rest: ``f(x) = rest(first(x))``.

    ``first(params, x)`` (or ``first(x)``) maps ONE input ``(k,)`` to the first layer's
    pre-activation ``z`` (any shape) and must be affine in ``x`` (a dense or convolutional layer
    with bias); ``rest(params, z)`` (or ``rest(z)``) maps it to the outputs ``(m,)``. Intervening on
    ``x_i`` then changes ``z`` by a rank-one term, ``first(x with x_i = a) = first(x) +
    (a - x_i) * first_linear(e_i)``, so eqn 2 needs the first layer once per data row, not once per
    (row, feature, alpha). :func:`jcausal.models.split_functional` gives this split for the
    project's own models.
    """

    first: Callable
    rest: Callable

    def then(self, fn: Callable) -> Split:
        """The same model with ``fn`` applied to its outputs (e.g. ``jax.nn.softmax``). Hashable
        when ``fn`` is, so compiled programs are reused across calls."""
        return Split(self.first, _Then(self.rest, fn))


class _Composed(NamedTuple):
    """A :class:`Split` as one callable ``f(params, x) = rest(params, first(params, x))``."""

    split: Split

    def __call__(self, params, x):
        return self.split.rest(params, self.split.first(params, x))


def unwrap_model(f: Any, params: Any = None, *, split: bool = True) -> tuple[Any, Any]:
    """The pure ``(model, params)`` of anything an entry point takes (DESIGN.md section 4).

    An object with ``__jcausal_model__`` (what :func:`jcausal.wrap` returns) gives its pure form:
    its :class:`Split` (or ``apply(params, x)``) and its parameters; with ``split=False`` (entry
    points that call the model whole) it is asked for ``__jcausal_model__(split=False)``, and a
    Split that still comes back is composed into one callable ``f(params, x)``.
    Anything else is returned unchanged.

    Raises:
      ValueError: ``params=`` given explicitly for a wrapped model (it carries its own).
    """
    if not hasattr(f, "__jcausal_model__"):
        return f, params
    g, own = f.__jcausal_model__() if split else f.__jcausal_model__(split=False)
    if params is not None and params is not own:
        raise ValueError("this wrapped model carries its parameters (w.params): do not pass params= as well; "
                         "wrap the model again to use other parameters")
    if not split and isinstance(g, Split):
        g = _Composed(g)
    return g, own


class _Then(NamedTuple):
    inner: Callable
    fn: Callable

    def __call__(self, *args):
        return self.fn(self.inner(*args))


class Model(NamedTuple):
    """Hashable wrapper of a user model, so jitted code is cached on the user's callables.

    ``f``: a callable or a :class:`Split`; ``has_params``: call with ``params`` first;
    ``head``: optional smooth output map applied after ``f`` (Gauss-Newton's body/head split).
    """

    f: Any
    has_params: bool
    head: Callable | None = None

    @property
    def is_split(self) -> bool:
        return isinstance(self.f, Split)

    def _call(self, g, params, x):
        return g(params, x) if self.has_params else g(x)

    def first(self, params, x):
        return self._call(self.f.first, params, x)

    def rest(self, params, z):
        y = jnp.atleast_1d(self._call(self.f.rest, params, z))
        return y if self.head is None else jnp.atleast_1d(self.head(y))

    def body(self, params, x):
        if self.is_split:
            return jnp.atleast_1d(self._call(self.f.rest, params, self.first(params, x)))
        return jnp.atleast_1d(self._call(self.f, params, x))

    def __call__(self, params, x):
        z = self.body(params, x)
        return z if self.head is None else jnp.atleast_1d(self.head(z))


_WARNED: set[int] = set()
_MIN_CLOSED_SIZE = 64  # elements: small constants (a scale, a mask of a few entries) are fine


def _closed_arrays(f, depth: int = 0) -> list[str]:
    """Names of large array-like values ``f`` closes over (closure cells, partial arguments,
    bound ``self`` of methods, and callables nested one level inside those)."""
    if depth > 2 or f is None:
        return []
    found: list[str] = []
    if isinstance(f, functools.partial):
        for j, v in enumerate((*f.args, *f.keywords.values())):
            found += _classify(v, f"partial argument {j}", depth)
        found += _closed_arrays(f.func, depth + 1)
        return found
    if isinstance(f, (Split, _Then, Model)):
        for v in f:
            if callable(v):
                found += _closed_arrays(v, depth + 1)
        return found
    code = getattr(f, "__code__", None)
    cells = getattr(f, "__closure__", None) or ()
    if code is not None:
        for name, cell in zip(code.co_freevars, cells):
            try:
                v = cell.cell_contents
            except ValueError:  # empty cell
                continue
            found += _classify(v, name, depth)
    return found


def _classify(v, name: str, depth: int) -> list[str]:
    if isinstance(v, (jax.Array, np.ndarray)):
        return [name] if np.size(v) >= _MIN_CLOSED_SIZE else []
    leaves = None
    try:
        from flax import nnx

        if isinstance(v, (nnx.Module, nnx.State)):
            return [name]
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, (dict, list, tuple)) and v:
        leaves = jax.tree.leaves(v)
        if any(isinstance(x, (jax.Array, np.ndarray)) and np.size(x) >= _MIN_CLOSED_SIZE for x in leaves):
            return [name]
        return []
    if callable(v) and not isinstance(v, type):
        return _closed_arrays(v, depth + 1)
    return []


def warn_closed_over_arrays(f: Any, stacklevel: int = 3) -> list[str]:
    """Warn once per callable when ``f`` closes over JAX/NumPy arrays (or an NNX module/state).

    Such arrays are baked into the compiled program, which is cached on ``f``'s identity: if the
    arrays change, later calls silently return stale results, and large constants also compile
    slowly. Returns the names found."""
    names = _closed_arrays(f)
    if names and id(f) not in _WARNED:
        _WARNED.add(id(f))
        warnings.warn(
            f"the model callable closes over arrays ({', '.join(sorted(set(names))[:5])}): they are "
            "compiled in as constants and the compiled program is cached on the callable, so results "
            "go stale if those arrays change. Pass parameters through params= and take them as the "
            "first argument, f(params, x).", UserWarning, stacklevel=stacklevel)
    return names
