"""Layer outputs of wrapped models, named as each framework names its layers (TRACER on any model).

Each framework gets a *taps* function ``taps(params, xb) -> (output, [(name, value), ...])`` that
runs the model once and records every submodule's output:

* Flax NNX: ``nnx.capture`` (attribute paths, ``convs.0``), as :mod:`jcausal.tracer.activations`;
* Flax Linen: ``capture_intermediates=True`` (module names, ``Dense_0``, ``encoder.fc1``);
* Equinox: every submodule temporarily replaced by a recording proxy (field paths, ``layers.0``);
* Keras: every layer's ``call`` temporarily wrapped during ``stateless_call`` (layer names, ``dense_1``);
* PyTorch: the converted graph's ``nn_module_stack`` (module paths, ``features.0``).

A submodule called twice gives ``name#0`` and ``name#1``. The execution order is read from the
traced program (each value ranked by the equation that produced it), as for NNX today.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter

import jax
import jax.numpy as jnp

__all__ = ["PerExample", "eqx_taps", "keras_taps", "layer_name", "linen_taps", "nnx_captured", "nnx_taps"]


def _dedupe(items):
    """Names seen several times get ``#i`` suffixes, in call order."""
    counts = Counter(n for n, _ in items)
    seen: Counter = Counter()
    out = []
    for n, v in items:
        if counts[n] > 1:
            out.append((f"{n}#{seen[n]}", v))
            seen[n] += 1
        else:
            out.append((n, v))
    return out


class PerExample:
    """A framework's call as a pure function of ONE example: ``x`` reshaped to ``shape``, the batch
    axis added and removed when ``batched``, ``head`` applied to the output. ``fn(params, x) -> y``
    gives ``y`` (``layers=False``, the wrapped model's ``apply``); ``fn(params, x) -> (y, [(name,
    value), ...])`` gives ``(head(y), layers)`` (``layers=True``, the layer taps, named once each).

    ``dtype``: the example's; a model wrapped with an integer example (token ids) refuses real-valued
    inputs with a message (never a type error deep inside XLA).

    ``takes_key``: the layer taps accept ``key=`` (an NNX model whose call takes a PRNG key: its
    exogenous layers, dropout, are active under a key); ``__call__(params, x, key=...)`` passes it on.
    """

    def __init__(self, fn, shape, batched, head, *, layers: bool = False, dtype=None):
        self.fn, self.shape, self.batched, self.head, self.layers = fn, tuple(shape), batched, head, layers
        self.takes_key = bool(getattr(fn, "takes_key", False))
        self.integer = dtype is not None and jnp.issubdtype(dtype, jnp.integer)

    def __call__(self, params, x, key=None):
        x = jnp.asarray(x)
        if self.integer and not jnp.issubdtype(x.dtype, jnp.integer):
            raise TypeError(f"this model was wrapped with an integer example (token ids?): it takes integer "
                            f"inputs, got {x.dtype}; wrap it with a float example to explain real-valued "
                            "inputs")
        x = x if x.shape == self.shape else x.reshape(self.shape)
        xb = x[None] if self.batched else x
        got = self.fn(params, xb) if key is None else self.fn(params, xb, key=key)
        out, items = got if self.layers else (got, None)
        if self.batched:
            out = jax.tree.map(lambda a: a[0], out)
        out = out if self.head is None else self.head(out)
        if not self.layers:
            return out
        if self.batched:
            items = [(n, v[0] if getattr(v, "ndim", 0) >= 1 and v.shape[0] == 1 else v) for n, v in items]
        return out, _dedupe([(n, v) for n, v in items if isinstance(v, jax.Array)])


def layer_name(path) -> str:
    """An NNX capture path ``(*attributes, method)`` as a layer name: ``convs.0``, ``fc:encode``."""
    *mod, method = path
    base = ".".join(str(p) for p in mod)
    return base if method == "__call__" else f"{base}:{method}"


def nnx_captured(state) -> list:
    """``[(name, array), ...]`` of an ``nnx.capture`` state, in capture order; the root module's
    own methods (the model output) are left out, a method called twice gives ``name#0``, ``name#1``."""
    from flax import nnx

    items = []
    for path, var in nnx.to_flat_state(state):
        if len(path) < 2:
            continue
        vals = var.get_value()
        vals = vals if isinstance(vals, tuple) else (vals,)
        name = layer_name(path)
        items += [(name if len(vals) == 1 else f"{name}#{i}", v) for i, v in enumerate(vals)]
    return items


def nnx_taps(graphdef, kwargs, takes_key: bool = False):
    """The layer taps of an NNX model: ``taps(params, x, key=None)``; ``key`` is passed to the
    model's call (``takes_key``: its ``__call__`` has a ``key`` argument not bound in ``kwargs``)."""
    from flax import nnx

    def taps(p, x, key=None):
        model = nnx.merge(graphdef, p)
        kw = kwargs if key is None else {**kwargs, "key": key}
        out, state = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(x, **kw)
        return out, nnx_captured(state)

    taps.takes_key = takes_key
    return taps


def linen_taps(module, kwargs):
    def taps(p, x):
        out, state = module.apply(p, x, capture_intermediates=True, mutable=["intermediates"], **kwargs)
        items = []

        def walk(d, path):
            for k, v in d.items():
                if k == "__call__" and path:
                    items.extend((".".join(path), a) for a in v)
                elif isinstance(v, dict) or hasattr(v, "items"):
                    walk(v, (*path, str(k)))

        walk(state.get("intermediates", {}), ())
        return out, items

    return taps


_TAPE: list | None = None


def _tap_class():
    import equinox as eqx

    class _Tap(eqx.Module):
        inner: eqx.Module
        name: str = eqx.field(static=True)

        def __call__(self, *args, **kwargs):
            y = self.inner(*args, **kwargs)
            if _TAPE is not None:
                _TAPE.append((self.name, y))
            return y

        def __getattr__(self, item):  # attribute access of the parent passes through
            return getattr(self.inner, item)

    return _Tap


def _eqx_tapped(module, path, Tap):
    """A copy of ``module`` with every submodule (at any depth) wrapped in a recording ``Tap``."""
    import equinox as eqx

    def visit(v, p):
        if isinstance(v, eqx.Module):
            inner = _eqx_tapped(v, p, Tap)
            return Tap(inner, ".".join(p)) if callable(v) else inner
        if isinstance(v, (list, tuple)):
            out = [visit(a, (*p, str(i))) for i, a in enumerate(v)]
            return type(v)(out) if isinstance(v, list) else tuple(out)
        if isinstance(v, dict):
            return {k: visit(a, (*p, str(k))) for k, a in v.items()}
        return v

    new = copy.copy(module)
    for f in dataclasses.fields(module):
        if hasattr(module, f.name):
            object.__setattr__(new, f.name, visit(getattr(module, f.name), (*path, f.name)))
    return new


def eqx_taps(static, kwargs):
    import equinox as eqx

    Tap = _tap_class()

    def taps(p, x):
        global _TAPE
        model = _eqx_tapped(eqx.combine(p, static), (), Tap)
        saved, _TAPE = _TAPE, []
        try:
            out = model(x, **kwargs)
            items = _TAPE
        finally:
            _TAPE = saved
        return out, items

    return taps


def keras_taps(model, raw):
    layers = [(layer.name, layer) for layer in model._flatten_layers(include_self=False)]

    def taps(p, x):
        items = []

        def tapped(name, call):
            def call_and_record(*args, **kwargs):
                y = call(*args, **kwargs)
                items.append((name, y))
                return y

            return call_and_record

        for name, layer in layers:
            object.__setattr__(layer, "call", tapped(name, layer.call))
        try:
            out = raw(p, x)
        finally:
            for _, layer in layers:
                object.__delattr__(layer, "call")
        return out, items

    return taps
