"""How a user callable is called: ``f(x)`` or ``f(params, x)``, and the split model
``first(params, x)`` (an affine map) followed by ``rest(params, z)``.

A result must never come from a model state that no longer holds. Every entry point that jits a
user's callable first traces it once (:func:`trace_model` / :func:`bind_model`): the arrays it reads
(closed-over weights, globals, the variables of an NNX or Keras module it calls) become the
``consts`` of a jaxpr and are then passed to the compiled program as *arguments*, never compiled
in. The traced callable (:class:`Traced`) compares and hashes by the jaxpr's structure, so the
compiled program is reused across calls and across fresh lambdas of the same computation, and the
values it reads are those of the current call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

__all__ = ["Classifier", "Model", "Split", "Traced", "bind_model", "trace_model", "unwrap_model"]


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

    def composed(self) -> Callable:
        """The model as one hashable callable ``f(params, x) = rest(params, first(params, x))``."""
        return _Composed(self)


class _Composed(NamedTuple):
    """A :class:`Split` as one callable ``f(params, x) = rest(params, first(params, x))``."""

    split: Split

    def __call__(self, params, x):
        return self.split.rest(params, self.split.first(params, x))


def unwrap_model(f: Any, params: Any = None, *, split: bool = True,
                 probabilities: bool = False) -> tuple[Any, Any]:
    """The pure ``(model, params)`` of anything an entry point takes (DESIGN.md section 4).

    An object with ``__jcausal_model__`` (what :func:`jcausal.wrap` returns) gives its pure form:
    its :class:`Split` (or ``apply(params, x)``) and its parameters; with ``split=False`` (entry
    points that call the model whole) it is asked for ``__jcausal_model__(split=False)``, and a
    Split that still comes back is composed into one callable ``f(params, x)``.
    With ``probabilities=True`` (methods that need class probabilities, e.g. GCE's information
    flow) a wrapped model whose ``output`` is ``"raw"`` (logits) comes with ``jax.nn.softmax``
    applied to its output; one whose output is already probabilities is never softmaxed again.
    Anything else is returned unchanged.

    Raises:
      ValueError: ``params=`` given explicitly for a wrapped model (it carries its own).
    """
    if not hasattr(f, "__jcausal_model__"):
        return f, params
    g, own = f.__jcausal_model__() if split else f.__jcausal_model__(split=False)
    if params is not None and params is not own and not _same_leaves(params, own):
        raise ValueError("this wrapped model carries its parameters (w.params): do not pass params= as well; "
                         "wrap the model again to use other parameters")
    if not split and isinstance(g, Split):
        g = g.composed()
    if probabilities and getattr(f, "output", None) == "raw":
        g = g.then(jax.nn.softmax) if isinstance(g, Split) else _Then(g, jax.nn.softmax)
    return g, own


def _same_leaves(a, b) -> bool:
    """The same arrays (a wrapped model reads its parameters afresh: ``w.params`` is a new tree of
    the same arrays while the model is unchanged)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(x is y for x, y in zip(la, lb))


class _Then(NamedTuple):
    inner: Callable
    fn: Callable

    def __call__(self, *args):
        return self.fn(self.inner(*args))


class Model(NamedTuple):
    """Hashable wrapper of a user model: the static argument of the jitted drivers.

    ``f``: a callable or a :class:`Split`; ``has_params``: call with ``params`` first;
    ``head``: optional smooth output map applied after ``f`` (Gauss-Newton's body/head split).
    Built by :func:`bind_model`, every part is a :class:`Traced` callable and ``params`` is the
    pair ``(user params, consts)``.
    """

    f: Any
    has_params: bool
    head: Callable | None = None

    @property
    def is_split(self) -> bool:
        return isinstance(self.f, Split)

    def _call(self, g, params, x):
        return g(params, x) if self.has_params else g(x)

    def apply_head(self, params, y):
        """The head on a body output ``y`` (``(m,)``, at least 1-d)."""
        # a traced head takes no parameters of its own: only its constants (params[1])
        h = self.head((None, params[1]), y) if isinstance(self.head, Traced) else self.head(y)
        return jnp.atleast_1d(h)

    def first(self, params, x):
        return self._call(self.f.first, params, x)

    def rest(self, params, z):
        y = jnp.atleast_1d(self._call(self.f.rest, params, z))
        return y if self.head is None else self.apply_head(params, y)

    def body(self, params, x):
        if self.is_split:
            return jnp.atleast_1d(self._call(self.f.rest, params, self.first(params, x)))
        return jnp.atleast_1d(self._call(self.f, params, x))

    def __call__(self, params, x):
        z = self.body(params, x)
        return z if self.head is None else self.apply_head(params, z)


class Classifier(NamedTuple):
    """A classifier as the static argument of compiled programs (built by
    :func:`jcausal._src.wrap.bind_classifier`): its :class:`Model` (hashes by the traced
    structure), the shape of ONE example and whether its output is already probabilities (never
    softmaxed twice). Called with the bound parameters of :func:`bind_model`."""

    model: Model
    shape: tuple[int, ...]
    probabilities: bool

    def _output(self, params, x) -> jax.Array:
        return self.model(params, jnp.reshape(x, self.shape)).astype(jnp.float32)

    def log_probs(self, params, x) -> jax.Array:
        """``(M,)`` float32 log-probabilities of ONE example ``x`` (its shape or flattened)."""
        y = self._output(params, x)
        if self.probabilities:  # floored: log 0 would give -inf and NaN gradients
            return jnp.log(jnp.maximum(y, jnp.finfo(jnp.float32).tiny))
        return jax.nn.log_softmax(y)

    def probs(self, params, x) -> jax.Array:
        """``(M,)`` float32 class probabilities of ONE example ``x``."""
        y = self._output(params, x)
        return y if self.probabilities else jax.nn.softmax(y)


# ------------------------------------------------------------------------- traced user callables

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class Traced:
    """A user callable traced once into a jaxpr, called as ``traced((params, consts), *args)``.

    ``consts[slot]`` are the arrays the callable read when it was traced (closed-over weights,
    globals, module variables): arguments of the compiled program, so a later call with the current
    values never sees stale ones. Equality and hash are those of the jaxpr's text, the argument
    and output structures and the constants' shapes and dtypes: two traces of the same computation
    share one compiled program, whatever the values they read.
    """

    __slots__ = ("jaxpr", "in_tree", "out_tree", "fingerprint", "slot", "name")

    def __init__(self, jaxpr, in_tree, out_tree, fingerprint: str, slot: int, name: str):
        self.jaxpr, self.in_tree, self.out_tree = jaxpr, in_tree, out_tree
        self.fingerprint, self.slot, self.name = fingerprint, slot, name

    def __eq__(self, other) -> bool:
        return type(other) is Traced and (self.fingerprint, self.slot) == (other.fingerprint, other.slot)

    def __hash__(self) -> int:
        return hash((self.fingerprint, self.slot))

    def __repr__(self) -> str:
        return f"Traced({self.name}, slot={self.slot})"

    def __call__(self, params, *args, **kwargs):
        user, consts = params
        leaves, tree = jax.tree.flatten((user, args, kwargs))
        if tree != self.in_tree:
            raise TypeError(f"{self.name} was traced for arguments {self.in_tree}, called with {tree}")
        out = jaxpr_as_fun(ClosedJaxpr(self.jaxpr, list(consts[self.slot])))(*leaves)
        return jax.tree.unflatten(self.out_tree, out)


def _name(f) -> str:
    return getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or type(f).__name__


def trace_model(f: Callable, params, *args, has_params: bool | None = None, slot: int = 0,
                input_desc: str | None = None, part: str = "", **kwargs):
    """Trace ``f(params, *args, **kwargs)`` (or ``f(*args, **kwargs)`` when ``params`` is ``None``
    and ``has_params`` is not ``True``) on the shapes of the arguments given.

    Args:
      f: the user's callable.
      params: its parameters (a pytree) or ``None``.
      *args, **kwargs: example arguments (arrays or ``jax.ShapeDtypeStruct``), ONE example.
      has_params: call ``f`` with ``params`` first (default: ``params is not None``).
      slot: where its constants go in the ``consts`` tuple of :func:`bind_model`.
      input_desc: what the input is, for the error message (e.g. ``"one row of X (k = 4
        features)"``); part: which part of a model ``f`` is (e.g. ``"the first part of the Split"``).

    Returns:
      ``(traced, consts)``: a :class:`Traced` callable and the tuple of arrays it read.

    Raises:
      ValueError: ``f`` cannot be traced with these arguments (the message names the input's shape,
        ``input_desc`` and the model's own error, which usually names the size it expected).
    """
    if has_params is None:
        has_params = params is not None

    def g(p, a, kw):
        return f(p, *a, **kw) if has_params else f(*a, **kw)

    try:
        closed, out_shape = jax.make_jaxpr(g, return_shape=True)(params, args, kwargs)
    except (TypeError, ValueError) as err:
        shapes = [tuple(getattr(a, "shape", ())) for a in args]
        shape = shapes[0] if len(shapes) == 1 else shapes
        on = f"{input_desc}, shape {shape}" if input_desc else f"one input of shape {shape}"
        raise ValueError(f"the model {_name(f)!r}{f' ({part})' if part else ''} cannot be evaluated on "
                         f"{on}: {type(err).__name__}: {' '.join(str(err).split())[:400]}") from None
    in_tree = jax.tree.structure((params, args, kwargs))
    out_tree = jax.tree.structure(out_shape)
    consts = tuple(closed.consts)
    avals = tuple((tuple(jnp.shape(c)), str(jnp.result_type(c))) for c in consts)
    text = _ADDRESS.sub("", str(closed.jaxpr))
    fingerprint = f"{text}|{in_tree}|{out_tree}|{avals}"
    return Traced(closed.jaxpr, in_tree, out_tree, fingerprint, slot, _name(f)), consts


def bind_model(f: Callable | Split, params, example, *, head: Callable | None = None,
               input_desc: str | None = None):
    """The :class:`Model` a jitted driver takes for the user's ``f`` and its ``params``, traced on
    ONE example input (an array or ``jax.ShapeDtypeStruct``): ``(model, bound_params)``.

    Pass ``bound_params`` wherever ``params`` went: it is ``(params, consts)``, the arrays every
    part read now, so compiled programs (cached on ``model``, which hashes by structure) always
    evaluate the model as it is at this call. ``head`` (Gauss-Newton's smooth output map) is traced
    on the body's output. ``input_desc`` says what ``example`` is in error messages (e.g. ``"one
    row of X (k = 4 features)"``).
    """
    f, params = unwrap_model(f, params)
    has = params is not None
    if isinstance(f, Split):
        first, c0 = trace_model(f.first, params, example, has_params=has, slot=0, input_desc=input_desc,
                                part="the first part of the Split")
        z = jax.eval_shape(lambda P, x: first(P, x), (params, (c0,)), example)
        rest, c1 = trace_model(f.rest, params, z, has_params=has, slot=1, part="the rest of the Split",
                               input_desc="the output of its first part")
        g, consts = Split(first, rest), (c0, c1)
        y = jax.eval_shape(lambda P, x: rest(P, first(P, x)), (params, consts), example)
    else:
        g, c0 = trace_model(f, params, example, has_params=has, slot=0, input_desc=input_desc)
        consts = (c0,)
        y = jax.eval_shape(lambda P, x: g(P, x), (params, consts), example)
    if head is not None:
        y1 = jax.ShapeDtypeStruct(tuple(y.shape) or (1,), y.dtype)  # the body's output, at least 1-d
        head, ch = trace_model(head, None, y1, slot=len(consts))
        consts = (*consts, ch)
    return Model(g, True, head), (params, consts)
