"""PyTorch ``nn.Module`` -> pure JAX function, once, through ``torch.export``.

``torch.export.export(module.eval(), (example[None],))`` records the module's forward pass as a
graph of ATen operations with its parameters and buffers lifted to inputs. :func:`convert` copies
those tensors to JAX arrays (the ``params``, keyed by their ``state_dict`` names) and interprets the
graph's operations in ``jax.numpy``/``lax`` (:mod:`jcausal._src.torch_ops`); the result is
``apply(params, xb)`` on a batch in torch's own layout (NCHW in and out, so the wrapped function
takes the example in the layout the user gave it; convolutions run channels-last inside).

Supported: Linear, Conv1d/2d, ReLU, GELU, SiLU, Tanh, Sigmoid, Softplus, Softmax/LogSoftmax,
MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d, Flatten/view/reshape/permute, BatchNorm (eval),
LayerNorm, Dropout (eval), Embedding, add/sub/mul/div/cat/matmul and a few more. Another operation
is refused naming it and the module path it occurs in; data-dependent Python control flow cannot be
exported and is refused saying so.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.torch_ops import OPS
from jcausal._src.torch_ops import torch_dtype as _dtype

__all__ = ["Converted", "convert"]


class Converted(NamedTuple):
    """``apply(params, xb)``: the module on a batch ``xb`` (torch layout); ``params``: ``{name:
    array}``; ``taps(params, xb) -> (output, [(module path, output)])``; ``batched``: True."""

    apply: Callable
    params: dict
    taps: Callable
    batched: bool


def _op_name(target) -> str:
    if target is operator.getitem:
        return "getitem"
    text = str(target)
    return text.split(".")[1] if text.startswith("aten.") else text


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [v[0] for v in stack.values() if v[0]]
    return paths[-1] if paths else "<root>"


def _export(module, xb, kwargs, shape):
    import torch

    try:
        return torch.export.export(module, (xb,), kwargs=kwargs or None)
    except Exception as err:  # noqa: BLE001 -- torch raises many exception types from export
        text = f"{type(err).__name__}: {err}"
        if any(
            s in text
            for s in (
                "data-dependent",
                "data dependent",
                "control flow",
                "GuardOnDataDependent",
                "Could not guard",
                "Could not extract specialized integer",
            )
        ):
            raise ValueError(
                "torch.export cannot convert this module: its forward pass has data-dependent control flow "
                "(a Python `if`/loop on tensor values), which one traced graph cannot represent. Rewrite the "
                "branch with torch.where (or torch.cond), or wrap a JAX function instead. torch said: "
                + text.splitlines()[0]
            ) from err
        hint = ""
        for name, sub in module.named_modules():
            if isinstance(sub, torch.nn.Linear):
                hint = f"; its first layer {name!r} (Linear) takes {sub.in_features} features"
                break
            if isinstance(sub, torch.nn.modules.conv._ConvNd):
                hint = f"; its first layer {name!r} ({type(sub).__name__}) takes {sub.in_channels} channels"
                break
        raise ValueError(
            f"the torch model rejects an example of shape {tuple(shape)} (exported as a batch "
            f"{tuple(xb.shape)}){hint}: {text.splitlines()[0]}"
        ) from err


def convert(module, example, **kwargs) -> Converted:
    """Convert a ``torch.nn.Module`` once (eval mode, weights copied) to a JAX function.

    Args:
      module: the torch module; exported in eval mode (its training flag is restored after).
      example: ONE input (array-like), in torch's layout (e.g. ``(C, H, W)``); exported as ``example[None]``.
      **kwargs: extra keyword arguments of ``forward``.

    Returns:
      :class:`Converted`.

    Raises:
      ValueError: an operation without a JAX translation (named, with its module path), data-dependent
        control flow, or an example the module rejects.
    """
    import torch

    x = np.asarray(example)
    xb = torch.from_numpy(np.array(x[None]))
    was_training = module.training
    module.eval()
    try:
        ep = _export(module, xb, kwargs, x.shape)
    finally:
        module.train(was_training)
    sig = ep.graph_signature
    state = {**ep.state_dict, **getattr(ep, "constants", {})}
    lifted = {
        **sig.inputs_to_parameters,
        **sig.inputs_to_buffers,
        **getattr(sig, "inputs_to_lifted_tensor_constants", {}),
    }
    params = {}
    for name in lifted.values():
        t = state[name]
        params[name] = jnp.asarray(t.detach().cpu().numpy())
    user_inputs = list(sig.user_inputs)
    nodes = list(ep.graph.nodes)
    for node in nodes:
        if node.op == "call_function" and _op_name(node.target) not in OPS:
            raise ValueError(
                f"jcausal cannot convert the torch operation {_op_name(node.target)!r} "
                f"({node.target}) in module {_module_path(node)!r}; supported: {sorted(OPS)}"
            )
        if node.op in ("call_module", "call_method", "get_attr") or (
            node.op == "call_function" and "higher_order" in str(node.target)
        ):
            raise ValueError(
                f"jcausal cannot convert the torch node {node.target} in module {_module_path(node)!r}"
            )
    return Converted(
        _Graph(nodes, lifted, user_inputs, False), params, _Graph(nodes, lifted, user_inputs, True), True
    )


class _Graph:
    """Interpret the exported graph on JAX arrays (hashable by identity, one per conversion)."""

    def __init__(self, nodes, lifted, user_inputs, record):
        self.nodes, self.lifted, self.user_inputs, self.record = nodes, lifted, user_inputs, record

    def __call__(self, params, xb):
        env: dict[str, Any] = {}
        items: list = []
        open_: dict[str, tuple[str, Any]] = {}  # stack key -> (module path, last value inside)

        def read(a):
            if hasattr(a, "op") and hasattr(a, "name"):
                return env[a.name]
            if isinstance(a, (list, tuple)):
                return type(a)(read(b) for b in a)
            if _dtype(a) is not None:
                return _dtype(a)
            return a

        for node in self.nodes:
            if node.op == "placeholder":
                env[node.name] = params[self.lifted[node.name]] if node.name in self.lifted else xb
            elif node.op == "call_function":
                fn = OPS[_op_name(node.target)]
                kw = {
                    k: read(v)
                    for k, v in node.kwargs.items()
                    if k not in ("device", "layout", "pin_memory", "memory_format", "non_blocking")
                }
                env[node.name] = fn(*read(node.args), **kw)
                if self.record:
                    stack = {k: v[0] for k, v in (node.meta.get("nn_module_stack") or {}).items() if v[0]}
                    for k in reversed([k for k in open_ if k not in stack]):  # inner first
                        items.append(open_.pop(k))
                    for k, path in stack.items():
                        open_[k] = (path, env[node.name])
            elif node.op == "output":
                out = read(node.args[0])
                out = out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out
                if self.record:
                    items.extend(open_.values())
                    return out, [(n, v) for n, v in items if isinstance(v, jax.Array)]
                return out
        raise ValueError("the exported torch graph has no output")
