"""ATen operations in ``jax.numpy``/``lax``, for :mod:`jcausal._src.torch_convert`.

``OPS`` maps an ATen operation's name (``conv2d``, ``linear``, ...; the overload is ignored) to a
function with torch's argument order and semantics on JAX arrays: NCHW layouts, torch's
broadcasting (lower-rank operands get leading unit axes, since the suite refuses JAX's implicit
rank promotion), eval-mode batch norm and dropout.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["OPS", "torch_dtype"]


def _tuple(v, n):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(v * n if len(v) == 1 else v)


def _conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """torch's convolution (NCHW input, OIHW weights), computed channels-last: XLA:CPU runs NHWC
    convolutions several times faster than NCHW ones; the result is returned in NCHW."""
    nd = w.ndim - 2
    if nd not in (1, 2):
        raise NotImplementedError(f"{nd}-D convolution")
    spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[nd]
    pad = padding.upper() if isinstance(padding, str) else [(p, p) for p in _tuple(padding, nd)]
    xl = jnp.transpose(x, (0, *range(2, nd + 2), 1))
    wl = jnp.transpose(w, (*range(2, nd + 2), 1, 0))
    y = lax.conv_general_dilated(
        xl,
        wl,
        _tuple(stride, nd),
        pad,
        rhs_dilation=_tuple(dilation, nd),
        feature_group_count=groups,
        dimension_numbers=spec,
    )
    if b is not None:
        y = y + b.reshape((1,) * (nd + 1) + (-1,))
    return jnp.transpose(y, (0, nd + 1, *range(1, nd + 1)))


def _convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    if transposed:
        raise NotImplementedError("transposed convolution")
    return _conv(x, w, b, stride, padding, dilation, groups)


def _pool(x, nd, kernel, stride, padding, dilation, ceil_mode, init, op):
    if ceil_mode:
        raise NotImplementedError("pooling with ceil_mode=True")
    k = _tuple(kernel, nd)
    s = _tuple(stride, nd) if stride not in (None, [], ()) else k
    p = _tuple(padding, nd)
    d = _tuple(dilation, nd)
    lead = (1,) * (x.ndim - nd)
    return lax.reduce_window(
        x,
        init,
        op,
        lead + k,
        lead + s,
        [(0, 0)] * (x.ndim - nd) + [(q, q) for q in p],
        window_dilation=lead + d,
    )


def _max_pool(nd):
    def f(x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
        return _pool(
            x,
            nd,
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
            -jnp.inf,
            lax.max,  # scalar: reduce_window_max
        )

    return f


def _avg_pool(nd):
    def f(x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
        zero = 0.0  # a Python scalar: lax picks reduce_window_sum (differentiable)
        s = _pool(x, nd, kernel, stride, padding, 1, ceil_mode, zero, lax.add)
        if divisor_override:
            return s / divisor_override
        if count_include_pad or not any(_tuple(padding, nd)):
            return s / math.prod(_tuple(kernel, nd))
        return s / _pool(jnp.ones_like(x), nd, kernel, stride, padding, 1, ceil_mode, zero, lax.add)

    return f


def _adaptive_avg(nd):
    def f(x, output_size):
        out = _tuple(output_size, nd)
        for a, o in zip(range(x.ndim - nd, x.ndim), out):
            n = x.shape[a]
            o = n if o is None else o
            if n % o == 0:
                shape = x.shape[:a] + (o, n // o) + x.shape[a + 1 :]
                x = x.reshape(shape).mean(axis=a + 1)
            else:
                parts = [
                    lax.slice_in_dim(x, (i * n) // o, -(-((i + 1) * n) // o), axis=a).mean(
                        axis=a, keepdims=True
                    )
                    for i in range(o)
                ]
                x = jnp.concatenate(parts, axis=a)
        return x

    return f


def _batch_norm(x, w, b, mean, var, training=False, momentum=0.1, eps=1e-5, *_):
    if training:
        raise NotImplementedError("batch_norm in training mode")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) * lax.rsqrt(var.reshape(shape) + eps)
    if w is not None:
        y = y * w.reshape(shape)
    return y if b is None else y + b.reshape(shape)


def _layer_norm(x, shape, w=None, b=None, eps=1e-5, *_):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = jnp.square(x - mu).mean(axis=axes, keepdims=True)
    y = (x - mu) * lax.rsqrt(var + eps)
    if w is not None:
        y = jnp.multiply(*_ranked(y, w))
    return y if b is None else jnp.add(*_ranked(y, b))


def _gelu(x, approximate="none"):
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def _softplus(x, beta=1, threshold=20):
    return jnp.where(x * beta > threshold, x, jax.nn.softplus(x * beta) / beta)


def _flatten(x, start=0, end=-1):
    start, end = start % x.ndim, end % x.ndim
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])


def _squeeze(x, dims=None):
    if dims is None:
        return jnp.squeeze(x)
    dims = [d % x.ndim for d in _tuple(dims, 1)]
    return jnp.squeeze(x, tuple(d for d in dims if x.shape[d] == 1))


def _expand(x, sizes, *_, **__):
    sizes = tuple(x.shape[i - (len(sizes) - x.ndim)] if s == -1 else s for i, s in enumerate(sizes))
    return jnp.broadcast_to(x, sizes)


def _slice(x, dim=0, start=None, end=None, step=1):
    n = x.shape[dim]
    start = 0 if start is None else max(-n, min(start, n)) % n if start < n else n
    end = n if end is None or end > n else end % n if end < 0 else end
    return lax.slice_in_dim(x, start, max(start, end), step, axis=dim)


def _to(x, *args, dtype=None, **_):
    for a in args:
        dtype = torch_dtype(a) or dtype
    return x if dtype is None else x.astype(dtype)


def torch_dtype(t):
    """A ``torch.dtype`` as the JAX dtype (canonicalized: int64 -> int32 without x64), else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(t, torch.dtype):
        return jax.dtypes.canonicalize_dtype(jnp.dtype(str(t).removeprefix("torch.")))
    return None


def _ranked(*xs):
    """Torch broadcasting: arrays of lower rank get leading unit axes (JAX may refuse rank promotion)."""
    n = max((jnp.ndim(x) for x in xs if hasattr(x, "ndim")), default=0)
    return [x.reshape((1,) * (n - x.ndim) + x.shape) if hasattr(x, "ndim") and x.ndim < n else x for x in xs]


def _bc(op):
    return lambda *xs: op(*_ranked(*xs))


def _binary(op):
    def f(a, b, alpha=1, rounding_mode=None):
        a, b = _ranked(a, b)
        if alpha != 1:
            b = b * alpha
        if rounding_mode == "floor":
            return jnp.floor_divide(a, b)
        if rounding_mode == "trunc":
            return jnp.trunc(a / b)
        return op(a, b)

    return f


def _factory(fill):
    def f(size, *args, dtype=None, **_):
        value = fill if fill is not None else args[0]
        return jnp.full(tuple(size), value, dtype or jnp.float32)

    return f


def _identity(x, *_, **__):
    return x


OPS: dict[str, Callable] = {
    "linear": lambda x, w, b=None: (
        jnp.matmul(x, w.T) if b is None else jnp.add(*_ranked(jnp.matmul(x, w.T), b))
    ),
    "addmm": lambda b, x, m, beta=1, alpha=1: jnp.add(*_ranked(beta * b, alpha * jnp.matmul(x, m))),
    "mm": jnp.matmul,
    "matmul": jnp.matmul,
    "bmm": jnp.matmul,
    "t": lambda x: x.T,
    "numpy_T": lambda x: x.T,
    "permute": lambda x, dims: jnp.transpose(x, dims),
    "transpose": lambda x, a, b: jnp.swapaxes(x, a, b),
    "view": lambda x, shape: x.reshape(shape),
    "reshape": lambda x, shape: x.reshape(shape),
    "_unsafe_view": lambda x, shape: x.reshape(shape),
    "flatten": _flatten,
    "unflatten": lambda x, dim, sizes: x.reshape(
        x.shape[: dim % x.ndim] + tuple(sizes) + x.shape[dim % x.ndim + 1 :]
    ),
    "unsqueeze": lambda x, d: jnp.expand_dims(x, d),
    "squeeze": _squeeze,
    "expand": _expand,
    "contiguous": _identity,
    "clone": _identity,
    "alias": _identity,
    "detach": _identity,
    "lift_fresh_copy": _identity,
    "_to_copy": _to,
    "to": _to,
    "type_as": lambda x, o: x.astype(o.dtype),
    "dropout": lambda x, p=0.5, train=False: x,
    "native_dropout": lambda x, p, train: (x, jnp.ones_like(x)),
    "feature_dropout": lambda x, p=0.5, train=False: x,
    "conv1d": _conv,
    "conv2d": _conv,
    "convolution": _convolution,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "gelu": _gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": _softplus,
    "elu": lambda x, alpha=1.0, *_: jax.nn.elu(x, alpha),
    "leaky_relu": lambda x, slope=0.01: jax.nn.leaky_relu(x, slope),
    "hardtanh": lambda x, lo=-1.0, hi=1.0: jnp.clip(x, lo, hi),
    "softmax": lambda x, dim, *_: jax.nn.softmax(x, axis=dim),
    "_softmax": lambda x, dim, *_: jax.nn.softmax(x, axis=dim),
    "log_softmax": lambda x, dim, *_: jax.nn.log_softmax(x, axis=dim),
    "_log_softmax": lambda x, dim, *_: jax.nn.log_softmax(x, axis=dim),
    "max_pool1d": _max_pool(1),
    "max_pool2d": _max_pool(2),
    "max_pool2d_with_indices": lambda *a: (_max_pool(2)(*a), None),
    "avg_pool1d": _avg_pool(1),
    "avg_pool2d": _avg_pool(2),
    "adaptive_avg_pool1d": _adaptive_avg(1),
    "adaptive_avg_pool2d": _adaptive_avg(2),
    "_adaptive_avg_pool2d": _adaptive_avg(2),
    "batch_norm": _batch_norm,
    "_native_batch_norm_legit_no_training": lambda *a: (
        _batch_norm(a[0], *a[1:5], False, *a[5:]),
        None,
        None,
    ),
    "layer_norm": _layer_norm,
    "native_layer_norm": lambda *a: (_layer_norm(*a), None, None),
    "embedding": lambda w, idx, *_: jnp.take(w, idx, axis=0),
    "add": _binary(jnp.add),
    "sub": _binary(jnp.subtract),
    "mul": _binary(jnp.multiply),
    "div": _binary(jnp.divide),
    "rsub": lambda a, b, alpha=1: b * alpha - a,
    "neg": jnp.negative,
    "exp": jnp.exp,
    "log": jnp.log,
    "sqrt": jnp.sqrt,
    "rsqrt": lax.rsqrt,
    "abs": jnp.abs,
    "pow": _bc(jnp.power),
    "maximum": _bc(jnp.maximum),
    "minimum": _bc(jnp.minimum),
    "clamp": lambda x, lo=None, hi=None: jnp.clip(x, lo, hi),
    "where": _bc(jnp.where),
    "cat": lambda xs, dim=0: jnp.concatenate(xs, axis=dim),
    "concat": lambda xs, dim=0: jnp.concatenate(xs, dim),
    "stack": lambda xs, dim=0: jnp.stack(xs, axis=dim),
    "mean": lambda x, dims=None, keepdim=False, dtype=None: jnp.mean(
        x, axis=None if dims is None else tuple(_tuple(dims, 1)), keepdims=keepdim
    ),
    "sum": lambda x, dims=None, keepdim=False, dtype=None: jnp.sum(
        x, axis=None if dims is None else tuple(_tuple(dims, 1)), keepdims=keepdim
    ),
    "select": lambda x, dim, i: jnp.take(x, i, axis=dim),
    "slice": _slice,
    "getitem": lambda xs, i: xs[i],
    "ones": _factory(1),
    "zeros": _factory(0),
    "full": _factory(None),
    "ones_like": lambda x, *_, dtype=None, **__: jnp.ones_like(x, dtype=dtype),
    "zeros_like": lambda x, *_, dtype=None, **__: jnp.zeros_like(x, dtype=dtype),
    "scalar_tensor": lambda v, *_, dtype=None, **__: jnp.asarray(v, dtype or jnp.float32),
}
