"""Every layer's output of a model, in execution order, through the model contract.

Any model enters once through :func:`jcausal.wrap` (an ``nnx.Module`` is wrapped here), and its
layers are the wrapped model's taps, named as its framework names them. For Flax NNX,
``nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)`` sows the output of every
public method (and ``__call__``) of every submodule while the model runs, so no model needs ``sow``
calls or hand-written hooks and the model files stay untouched. A *layer* is one call of a submodule
(the root module's own outputs are the model output, not layers); a submodule called twice (one
``Dropout`` reused) gives two layers ``name#0`` and ``name#1``. Names are the submodule paths
joined by dots (``convs.0``, ``fcs.2``), with ``:method`` for methods other than ``__call__``.

The State that ``nnx.capture`` returns is keyed by path, not by time, so the **execution order** is
recovered from the program itself: the captured values are outputs of the traced jaxpr and each is
ranked by the index of the equation that produced it (ties, e.g. a layer that returns its input,
keep the capture order). This is exact for any module, not a guess from attribute order.

Exogenous variables (paper section 3.1 and section 5: "runs the layers twice for the same input and
checks for any variations"): :func:`detect_randomness` runs the model with two different keys and
reports the layers whose outputs differ (``varying``). Every layer downstream of a dropout varies
too, so the *sources* of randomness are found by following the key through the jaxpr: a layer is a
source when its output depends on the key along a path that does not pass through another layer's
output (each captured output cuts the dependency it carries).

Models are called as ``model(x)`` or ``model(x, key=key)`` on ONE example (the project's protocol:
dropout active only when a key is given); only an NNX model's call takes a key.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from jcausal._src.batching import map_chunks
from jcausal._src.checks import require_finite
from jcausal._src.wrap import Wrapped, wrap
from jcausal._src.xla import jit

__all__ = [
    "Activations",
    "LayerOutputs",
    "RandomnessReport",
    "activations",
    "detect_randomness",
    "layer_outputs",
    "select_layers",
]


class LayerOutputs(NamedTuple):
    """A model as a pure function returning its layer outputs.

    Fields:
      apply: ``apply(params, x, key=None) -> (output, tuple of L arrays)`` on ONE example, the
        layers in execution order (only those kept by the ``layers=`` filter).
      params: the module state (pass it to jitted code as an argument).
      names: the ``L`` kept layer names, in execution order.
      shapes: the ``L`` per-example shapes.
      probabilities: the output is already class probabilities (a wrapped model whose ``output``
        is ``"probabilities"``); ``False``: logits (TRACER applies the softmax once).
    """

    apply: Callable[..., Any]
    params: Any
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    probabilities: bool = False


class Activations(NamedTuple):
    """Layer outputs for a batch.

    Fields:
      names: ``L`` layer names in execution order.
      values: tuple of ``L`` arrays ``(n, *shape_l)``.
      output: ``(n, ...)`` the model output.
    """

    names: tuple[str, ...]
    values: tuple
    output: jax.Array

    def as_dict(self) -> dict[str, jax.Array]:
        return dict(zip(self.names, self.values))


class RandomnessReport(NamedTuple):
    """Layers with internal randomness (the section 3.1 exogenous variables).

    Fields:
      varying: names of layers whose outputs differ between two keys (execution order).
      sources: the subset where fresh randomness enters (not merely inherited from upstream).
      max_abs_diff: ``{name: max |output(key1) - output(key2)|}`` for every layer.
    """

    varying: tuple[str, ...]
    sources: tuple[str, ...]
    max_abs_diff: dict[str, float]


def _producer_index(jaxpr):
    idx = {}
    for e, eqn in enumerate(jaxpr.eqns):
        for v in eqn.outvars:
            idx[v] = e
    return idx


def _order(closed, names):
    jaxpr = closed.jaxpr
    prod = _producer_index(jaxpr)
    n_out = len(jaxpr.outvars) - len(names)
    outvars = jaxpr.outvars[n_out:]
    rank = [prod.get(v, -1) if not isinstance(v, Literal) else -1 for v in outvars]
    return sorted(range(len(names)), key=lambda i: (rank[i], i))


def select_layers(names: Sequence[str], layers) -> list[str]:
    """Filter ``names`` by ``layers``: ``None`` (all), a sequence of names or ``fnmatch`` patterns
    (``"convs.*"``), or a predicate ``name -> bool``. Keeps execution order.

    Raises:
      ValueError: the filter keeps no layer, or an exact name does not exist.
    """
    names = list(names)
    if layers is None:
        kept = names
    elif callable(layers):
        kept = [n for n in names if layers(n)]
    else:
        pats = [layers] if isinstance(layers, str) else list(layers)
        for p in pats:
            if not any(ch in p for ch in "*?[") and p not in names:
                raise ValueError(f"layers= names {p!r}, which is not a layer; layers are {names}")
        kept = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if not kept:
        raise ValueError(f"layers={layers!r} selects no layer; layers are {names}")
    return kept


def _wrapped(model, example) -> Wrapped:
    """The model in jcausal's contract: a :class:`jcausal.Wrapped` as given, anything else wrapped
    once here (an ``nnx.Module`` called on ONE example; no eqn-2 split is needed by TRACER)."""
    return model if isinstance(model, Wrapped) else wrap(model, example, split=False)


def layer_outputs(model, example: jax.Array, *, layers=None) -> LayerOutputs:
    """Split ``model`` into a pure ``apply(params, x, key=None) -> (output, layer outputs)``.

    Args:
      model: a :class:`jcausal.Wrapped` model of any framework (layers named as the framework names
        them), or an ``nnx.Module`` called on ONE example (wrapped here with :func:`jcausal.wrap`).
      example: one input ``x`` (only its shape and dtype are used, to trace the layer order).
      layers: ``None`` (every layer), names / ``fnmatch`` patterns, or a predicate.

    Returns:
      :class:`LayerOutputs`.
    """
    example = jnp.asarray(example)
    w = _wrapped(model, example)
    taps, params = w.__jcausal_taps__()

    def run(p, x, key):
        return taps(p, x) if key is None or not taps.takes_key else taps(p, x, key=key)

    names: list[str] = []

    def traced(p, x):
        out, items = run(p, x, None)
        names[:] = [n for n, _ in items]
        return out, [v for _, v in items]

    closed = jax.make_jaxpr(traced)(params, example)
    if not names:
        raise ValueError(f"the wrapped {w.framework} model has no submodules: nothing to capture")
    order = _order(closed, names)
    ordered = [names[i] for i in order]
    kept = select_layers(ordered, layers)
    pick = [order[ordered.index(n)] for n in kept]
    layer_avals = closed.out_avals[len(closed.out_avals) - len(names):]
    kshapes = tuple(tuple(layer_avals[i].shape) for i in pick)

    def apply(params, x, key=None):
        out, items = run(params, x, key)
        return out, tuple(items[i][1] for i in pick)

    return LayerOutputs(apply, params, tuple(kept), kshapes, w.output == "probabilities")


@partial(jit, static_argnames=("apply", "batch_size"))
def _batched(apply, params, X, keys, batch_size):
    if keys is None:
        return jax.lax.map(lambda x: apply(params, x), X, batch_size=batch_size)
    return jax.lax.map(lambda xk: apply(params, xk[0], key=xk[1]), (X, keys), batch_size=batch_size)


def activations(model, X, *, layers=None, key: jax.Array | None = None,
                batch_size: int = 128, progress: bool = False) -> Activations:
    """Every (kept) layer's output for a batch ``X`` ``(n, ...)``, named and in execution order.

    Args:
      model: a :class:`jcausal.Wrapped` model, an ``nnx.Module``, or a :class:`LayerOutputs` from
        :func:`layer_outputs` (reuse it to avoid re-tracing).
      X: ``(n, *input_shape)``.
      layers: filter (see :func:`select_layers`); ignored when ``model`` is a ``LayerOutputs``.
      key: ``None`` for deterministic layers; else one key split per example (dropout active).
      batch_size: examples per compiled step (memory bound; the last chunk is padded).
      progress: show a progress bar over chunks.

    Returns:
      :class:`Activations` with ``values[l]`` of shape ``(n, *shapes[l])``.
    """
    X = jnp.asarray(X)
    if X.ndim < 1 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty batch (n, ...), got shape {X.shape}")
    require_finite(X, "X", rows="examples", fix="the layer outputs of such inputs are NaN")
    lo = model if isinstance(model, LayerOutputs) else layer_outputs(model, X[0], layers=layers)
    n = X.shape[0]
    bs = int(min(batch_size, n))
    chunk = min(8 * bs, bs * -(-n // bs))  # up to 8 lax.map steps per call: a progress bar moves
    keys = None if key is None else jax.random.split(key, n)
    out, vals = map_chunks(lambda xb, kb: _batched(lo.apply, lo.params, xb, kb, bs), (X, keys), chunk,
                           progress=progress, desc="activations", host=False)
    return Activations(lo.names, tuple(vals), out)


def _random_sources(taps, params, x, key, names_kept):
    names: list[str] = []

    def f(p, x, k):
        out, items = taps(p, x, key=k)
        names[:] = [n for n, _ in items]
        return out, [v for _, v in items]

    closed = jax.make_jaxpr(f)(params, x, key)
    jaxpr = closed.jaxpr
    n_params = len(jax.tree.leaves(params))
    key_vars = set(jaxpr.invars[n_params + 1:])
    n_out = len(jaxpr.outvars) - len(names)
    layer_of: dict[Any, list[str]] = {}
    for name, v in zip(names, jaxpr.outvars[n_out:]):
        if not isinstance(v, Literal):
            layer_of.setdefault(v, []).append(name)
    tainted = set(key_vars)
    sources = set()
    for eqn in jaxpr.eqns:
        hit = any((not isinstance(v, Literal)) and v in tainted for v in eqn.invars)
        for v in eqn.outvars:
            if hit:
                tainted.add(v)
            if v in layer_of:
                if v in tainted:
                    sources.update(layer_of[v])
                tainted.discard(v)  # cut: downstream randomness is attributed to this layer
    return [n for n in names_kept if n in sources]


def detect_randomness(model, x: jax.Array, key1: jax.Array, key2: jax.Array, *,
                      layers=None, atol: float = 0.0) -> RandomnessReport:
    """Run ONE input ``x`` through ``model`` with two keys and report the layers that vary.

    Args:
      model: a :class:`jcausal.Wrapped` model or an ``nnx.Module``, called as ``model(x, key=key)``;
        a model whose call takes no ``key`` (every framework but an NNX model with a ``key``
        argument) has no exogenous layers (empty report).
      x: one input.
      key1, key2: two different PRNG keys.
      layers: filter, as in :func:`layer_outputs`.
      atol: differences up to ``atol`` count as equal.

    Returns:
      :class:`RandomnessReport`.
    """
    x = jnp.asarray(x)
    require_finite(x, "the input x", rows=None, fix="NaN outputs differ from themselves under any key")
    w = _wrapped(model, x)
    lo = layer_outputs(w, x, layers=layers)
    taps, params = w.__jcausal_taps__()
    if not taps.takes_key:
        return RandomnessReport((), (), {n: 0.0 for n in lo.names})
    if bool(jnp.all(jax.random.key_data(key1) == jax.random.key_data(key2))):
        raise ValueError("detect_randomness needs two different keys")
    run = jit(lo.apply)
    _, a = run(lo.params, x, key1)
    _, b = run(lo.params, x, key2)
    diff = {n: float(jnp.max(jnp.abs(u - v))) if u.size else 0.0 for n, u, v in zip(lo.names, a, b)}
    varying = tuple(n for n in lo.names if diff[n] > atol)
    sources = tuple(n for n in _random_sources(taps, params, x, key1, list(lo.names)) if n in varying)
    return RandomnessReport(varying, sources, diff)
