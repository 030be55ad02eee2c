"""The eqn-2 fast path found automatically: the affine prefix of a JAX function on its input.

ACE's definition (eqn 2) intervenes on one input coordinate at a time. When the model starts with
an affine map ``z = A x + b`` (a dense or convolutional layer with its bias, after any reshape,
transposition or dtype conversion of ``x``), an intervention changes ``z`` by a rank-one term, so
the first layer runs once per data row (see :class:`jcausal.models.Split`). :func:`find_split`
finds that prefix in the jaxpr of ``apply(params, x)`` and returns ``Split(first, rest)``:

* ``first(params, x)`` evaluates the jaxpr's equations up to the cut (``z``);
* ``rest(params, z)`` evaluates the parameter-only equations the remainder needs and every equation
  after the cut.

Both take the parameters as arguments (never closed over: closed-over arrays become XLA constants
and constant folding a dense layer takes seconds), and both re-bind the recorded primitives, so
derivatives, ``vmap`` and ``jit`` work as on the original function.

The cut is the last equation after which exactly one input-dependent value is still needed, that
value is affine in ``x``, and a ``dot_general`` or ``conv_general_dilated`` with ``x`` on one side
and parameters on the other lies before it. Affine ops: reshape-like ops, dtype conversion,
``add``/``sub`` (of affine and parameter values), ``mul`` by / ``div`` by parameter values, ``neg``,
sums, slices, pads. The first non-affine op on ``x`` ends the search.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Literal

from jcausal._src.calling import Split

__all__ = ["JaxprFunction", "eval_eqns", "find_split", "inline_calls"]

_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr"}
# unary ops that keep an affine value affine (and a linear one linear, except pad with a nonzero value)
_STRUCTURAL = {
    "reshape",
    "transpose",
    "broadcast_in_dim",
    "squeeze",
    "expand_dims",
    "copy",
    "copy_p",
    "rev",
    "slice",
    "reduce_sum",
    "neg",
    "convert_element_type",
    "pad",
    "dynamic_slice",
    "reduce_precision",
    "real",
}
_LINEAR_MAPS = {"dot_general", "conv_general_dilated"}


def _is_drop(v) -> bool:
    """An unused output (``_``); ``DropVar`` is not exported by ``jax.extend.core`` before jax 0.9."""
    return type(v).__name__ == "DropVar"


def _read(env, v):
    return v.val if isinstance(v, Literal) else env[v]


def eval_eqns(eqns, env: dict) -> dict:
    """Evaluate jaxpr equations in order, binding each primitive again (as ``jax.core.eval_jaxpr``
    does); ``env`` maps variables to values and is updated in place. Calls (``jit``) are inlined."""
    for eqn in eqns:
        invals = [_read(env, v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _CALLS and _CALLS[name] in eqn.params:
            inner = eqn.params[_CALLS[name]]
            inner = inner if isinstance(inner, ClosedJaxpr) else ClosedJaxpr(inner, ())
            outs = eval_closed(inner, *invals)
        else:
            bound = eqn.primitive.get_bind_params(eqn.params)
            subfuns, bind_params = bound if isinstance(bound, tuple) else ((), bound)  # jax < 0.9: a pair
            ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
            with ctx if ctx is not None else contextlib.nullcontext():
                ans = eqn.primitive.bind(*subfuns, *invals, **bind_params)
            outs = ans if eqn.primitive.multiple_results else [ans]
        for v, a in zip(eqn.outvars, outs):
            if not _is_drop(v):
                env[v] = a
    return env


def eval_closed(closed: ClosedJaxpr, *args) -> list:
    """``closed(*args)`` by :func:`eval_eqns` (nested calls inlined)."""
    env = dict(zip(closed.jaxpr.constvars, closed.consts))
    env.update(zip(closed.jaxpr.invars, args))
    eval_eqns(closed.jaxpr.eqns, env)
    return [_read(env, v) for v in closed.jaxpr.outvars]


def inline_calls(closed: ClosedJaxpr, *args) -> ClosedJaxpr:
    """The same computation with nested ``jit`` calls inlined (one flat list of equations)."""
    return jax.make_jaxpr(lambda *a: eval_closed(closed, *a))(*args)


class JaxprFunction:
    """A hashable pure function ``f(params, x)`` that evaluates recorded jaxpr equations.

    ``params`` must have the tree structure it was traced with; ``x`` may have the traced shape or
    any shape of the same size (it is reshaped). ``consts`` are the jaxpr's own small constants."""

    def __init__(self, eqns, param_vars, x_var, x_shape, out_var, consts: dict, treedef, what: str):
        self.eqns, self.param_vars, self.x_var, self.x_shape = tuple(eqns), tuple(param_vars), x_var, x_shape
        self.out_var, self.consts, self.treedef, self.what = out_var, consts, treedef, what

    def __call__(self, params, x):
        leaves, treedef = jax.tree.flatten(params)
        if treedef != self.treedef:
            raise ValueError(f"{self.what}: params have structure {treedef}, expected {self.treedef}")
        env = dict(self.consts)
        env.update(zip(self.param_vars, leaves))
        if self.x_var is not None:
            x = jax.numpy.asarray(x)
            env[self.x_var] = x if x.shape == self.x_shape else x.reshape(self.x_shape)
        eval_eqns(self.eqns, env)
        return _read(env, self.out_var)

    def __repr__(self):
        return f"<jcausal {self.what}: {len(self.eqns)} equations>"


def _needed(eqns, outs) -> list:
    """Backward dead-code elimination: the equations needed for the variables ``outs``."""
    need = {v for v in outs if not isinstance(v, Literal)}
    kept = []
    for eqn in reversed(eqns):
        if any(v in need for v in eqn.outvars if not _is_drop(v)) or eqn.effects:
            kept.append(eqn)
            need.update(v for v in eqn.invars if not isinstance(v, Literal))
    return kept[::-1]


def _is_float(v) -> bool:
    return np.issubdtype(v.aval.dtype, np.floating)


def find_split(apply, params, example) -> Split | None:
    """Find the affine prefix of ``apply(params, x)`` on ``x`` (see the module docstring).

    Args:
      apply: a JAX function of ONE example, ``apply(params, x)``.
      params: its parameters (a pytree of arrays).
      example: one input; its shape and dtype are traced.

    Returns:
      ``Split(first, rest)`` whose parts take ``params`` as their first argument, or ``None`` when
      the computation does not start with a dense/convolutional layer on ``x`` alone.
    """
    example = jax.numpy.asarray(example)
    if not np.issubdtype(example.dtype, np.floating):
        return None
    leaves, treedef = jax.tree.flatten(params)
    closed = jax.make_jaxpr(lambda ls, x: apply(jax.tree.unflatten(treedef, ls), x))(leaves, example)
    closed = inline_calls(closed, *leaves, example)
    jaxpr = closed.jaxpr
    if len(jaxpr.outvars) != 1 or isinstance(jaxpr.outvars[0], Literal):
        return None
    *param_vars, x_var = jaxpr.invars
    last_use: dict[Any, int] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, Literal):
                last_use[v] = i
    final = set(v for v in jaxpr.outvars if not isinstance(v, Literal))

    xdep = {x_var}
    affine = {x_var}
    live = {x_var}
    seen_linear = False
    cut = None
    for i, eqn in enumerate(jaxpr.eqns):
        ins = [v for v in eqn.invars if not isinstance(v, Literal)]
        dep = [v in xdep for v in ins]
        if not any(dep):
            continue
        name = eqn.primitive.name
        aff = [v in affine for v in ins]
        ok = False
        if len(eqn.outvars) == 1 and all(a or not d for a, d in zip(aff, dep)):  # no non-affine input
            n_dep = sum(dep)
            if name in _STRUCTURAL:
                ok = all(_is_float(v) for v in eqn.outvars) and not any(dep[1:])
            elif name in ("add", "sub", "add_any", "concatenate"):
                ok = True
            elif name == "mul":
                ok = n_dep == 1
            elif name == "div":
                ok = n_dep == 1 and dep[0]
            elif name in _LINEAR_MAPS:
                ok = n_dep == 1
                seen_linear = seen_linear or ok
        out = [v for v in eqn.outvars if not _is_drop(v)]
        xdep.update(out)
        if not ok:
            break
        affine.update(out)
        live.update(out)
        live = {v for v in live if last_use.get(v, -1) > i or v in final}
        if seen_linear and len(live) == 1 and next(iter(live)) in affine:
            cut = (i, next(iter(live)))
    if cut is None:
        return None
    i, z_var = cut
    consts = dict(zip(jaxpr.constvars, closed.consts))
    first_eqns = _needed(jaxpr.eqns[: i + 1], [z_var])
    before = [
        e for e in jaxpr.eqns[: i + 1] if not any(v in xdep for v in e.invars if not isinstance(v, Literal))
    ]
    rest_eqns = _needed(before + list(jaxpr.eqns[i + 1 :]), jaxpr.outvars)
    first = JaxprFunction(first_eqns, param_vars, x_var, example.shape, z_var, consts, treedef, "split first")
    rest = JaxprFunction(
        rest_eqns, param_vars, z_var, tuple(z_var.aval.shape), jaxpr.outvars[0], consts, treedef, "split rest"
    )
    return Split(first, rest)
