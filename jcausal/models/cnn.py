"""Convolutional classifiers for 28x28 images: the GCE paper's CNN and a small AlexNet-style CNN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["GCECNN", "AlexNetSmall", "as_image", "max_pool_2x2"]


def _pool_forward(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


@jax.custom_jvp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 ('VALID': an odd last row/column is dropped), ``(N, H, W, C)``
    -> ``(N, H // 2, W // 2, C)``; equal to ``nnx.max_pool(x, (2, 2), strides=(2, 2))``.

    The value is ``reduce_window`` (XLA:CPU fuses it with the convolution before it, faster than a
    maximum of strided views). The
    derivative (a custom JVP, so forward mode, reverse mode and second derivatives all work) is
    the tangent at the window's maximum, as reshapes, a mask and sums: ``reduce_window``'s own
    gradient (``select_and_scatter``) is built from index arrays and a scatter on XLA:CPU, a large
    share of a GCE training step. At ties the tangents of
    the tied entries are averaged (after a ReLU, ties are zeros, whose tangent is 0 either way).
    """
    return _pool_forward(x)


@max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = max_pool_2x2(x)
    n, hh, ww, c = y.shape

    def window_sum(a):  # (n, 2 hh, 2 ww, c) -> (n, hh, ww, c)
        return a.reshape(n, hh, 2, ww, 2, c).sum(axis=(2, 4))

    up = jnp.repeat(jnp.repeat(y, 2, axis=1), 2, axis=2)
    mask = (x[:, :2 * hh, :2 * ww] == up).astype(t.dtype)
    return y, window_sum(mask * t[:, :2 * hh, :2 * ww]) / window_sum(mask)


def as_image(x: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
    """Accept ONE image as ``(H*W*C,)``, ``(H, W)`` or ``(H, W, C)``; return ``(H, W, C)``."""
    size = shape[0] * shape[1] * shape[2]
    if x.shape not in ((size,), shape[:2], shape) or (x.shape == shape[:2] and shape[2] != 1):
        raise ValueError(f"expected one image of shape {shape}, {shape[:2]} or ({size},), got {x.shape}")
    return x.reshape(shape)


class GCECNN(nnx.Module):
    """The MNIST classifier of the GCE paper (O'Shaughnessy et al. 2020, appendix E.1, Table 1):
    conv32 3x3 - ReLU - conv64 3x3 - ReLU - maxpool 2x2 - dropout 0.5 - fc128 - ReLU - dropout 0.5
    - fcM (logits; apply softmax for probabilities).

    Call: ``model(x, key=None)``, ``x`` one image ``(28, 28)``, ``(28, 28, 1)`` or ``(784,)`` ->
    ``(num_classes,)`` logits. Dropout is active only when ``key`` is given.
    """

    def __init__(self, num_classes: int, *, input_shape=(28, 28, 1), dropout: float = 0.5,
                 rngs: nnx.Rngs):
        h, w, c = input_shape
        self.input_shape = tuple(input_shape)
        self.conv1 = nnx.Conv(c, 32, (3, 3), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), padding="VALID", rngs=rngs)
        flat = ((h - 4) // 2) * ((w - 4) // 2) * 64
        self.fc1 = nnx.Linear(flat, 128, rngs=rngs)
        self.fc2 = nnx.Linear(128, num_classes, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def first_affine(self, x: jax.Array) -> jax.Array:
        """The first convolution's pre-activation, ``(26, 26, 32)`` for 28x28 inputs (affine in x)."""
        return self.conv1(as_image(x, self.input_shape)[None])[0]

    def after_first(self, z: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Everything after :meth:`first_affine`: ``model(x) == after_first(first_affine(x))``."""
        k1, k2 = (None, None) if key is None else tuple(jax.random.split(key))
        x = jax.nn.relu(z)[None]
        x = jax.nn.relu(self.conv2(x))
        x = max_pool_2x2(x)
        x = self.dropout(x.reshape(-1), deterministic=k1 is None, rngs=k1)
        x = jax.nn.relu(self.fc1(x))
        x = self.dropout(x, deterministic=k2 is None, rngs=k2)
        return self.fc2(x)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.after_first(self.first_affine(x), key=key)


class AlexNetSmall(nnx.Module):
    """A small AlexNet-style CNN for 28x28 inputs (the classifier TRACER analyses): five conv layers
    and three dense layers, i.e. eight activation outputs.

    conv32 5x5 - pool - conv64 3x3 - pool - conv96 3x3 - conv96 3x3 - conv64 3x3 - pool -
    fc256 - fc128 - fcM, ReLU after every hidden layer, dropout before fc256 and fc128.

    Call: ``model(x, key=None, return_activations=False)`` on ONE image; with
    ``return_activations`` it returns ``(logits, [8 activations])``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jcausal.models import AlexNetSmall
      >>> net = AlexNetSmall(10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0))
      >>> logits, acts = net(jnp.zeros((8, 8)), return_activations=True)
      >>> logits.shape, len(acts)
      ((10,), 8)
    """

    def __init__(self, num_classes: int = 10, *, input_shape=(28, 28, 1), dropout: float = 0.5,
                 rngs: nnx.Rngs):
        h, w, c = input_shape
        self.input_shape = tuple(input_shape)
        self.convs = nnx.List([
            nnx.Conv(c, 32, (5, 5), rngs=rngs),
            nnx.Conv(32, 64, (3, 3), rngs=rngs),
            nnx.Conv(64, 96, (3, 3), rngs=rngs),
            nnx.Conv(96, 96, (3, 3), rngs=rngs),
            nnx.Conv(96, 64, (3, 3), rngs=rngs),
        ])
        flat = (h // 8) * (w // 8) * 64
        self.fcs = nnx.List([
            nnx.Linear(flat, 256, rngs=rngs),
            nnx.Linear(256, 128, rngs=rngs),
            nnx.Linear(128, num_classes, rngs=rngs),
        ])
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None,
                 return_activations: bool = False):
        keys = (None, None) if key is None else tuple(jax.random.split(key))
        acts = []
        x = as_image(x, self.input_shape)[None]
        for i, conv in enumerate(self.convs):
            x = jax.nn.relu(conv(x))
            acts.append(x[0])
            if i in (0, 1, 4):
                x = max_pool_2x2(x)
        x = x.reshape(-1)
        for fc, k in zip(self.fcs[:2], keys):
            x = self.dropout(x, deterministic=k is None, rngs=k)
            x = jax.nn.relu(fc(x))
            acts.append(x)
        x = self.fcs[2](x)
        acts.append(x)
        return (x, acts) if return_activations else x


