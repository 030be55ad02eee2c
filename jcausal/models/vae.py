"""Variational autoencoder building blocks (Flax NNX): Gaussian latents, ELBO, conv and MLP VAEs.

Used by GCE (O'Shaughnessy et al. 2020) as its generative map, and reusable by the latent-ACE and
counterfactual-GAN work. Modules act on ONE example; batch with ``jax.vmap``.

- :func:`reparameterize`, :func:`gaussian_kl`, :func:`elbo`: pure functions of arrays.
- :class:`ConvEncoder`, :class:`ConvDecoder`: the GCE paper's Table 2 for 28x28 images;
  :class:`Conv2d`, :class:`ConvTranspose2d`: PyTorch-convention (transposed) convolutions as
  matrix products, fast to differentiate on CPU.
- :class:`MLPEncoder`, :class:`MLPDecoder`: small dense versions for tabular data.
- :class:`VAE`: an encoder and a decoder with ``encode``, ``decode``, ``elbo`` and ``__call__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jcausal.models.core import get_activation

__all__ = [
    "LIKELIHOODS",
    "VAEOutput",
    "reparameterize",
    "gaussian_kl",
    "log_likelihood",
    "elbo",
    "conv_im2col",
    "conv_valid",
    "conv_transpose",
    "Conv2d",
    "ConvTranspose2d",
    "ConvEncoder",
    "ConvDecoder",
    "MLPEncoder",
    "MLPDecoder",
    "VAE",
    "conv_vae",
    "mlp_vae",
]

LIKELIHOODS = ("sse", "gaussian", "bernoulli")


class VAEOutput(NamedTuple):
    """One example through a VAE: ``recon`` (input shape), ``mean``/``log_var``/``z`` ``(latent,)``."""

    recon: jax.Array
    mean: jax.Array
    log_var: jax.Array
    z: jax.Array


def reparameterize(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """A draw ``z = mean + exp(log_var / 2) * eps``, ``eps ~ N(0, I)`` (Kingma and Welling 2014);
    differentiable in ``mean`` and ``log_var``. Shapes ``(d,)`` -> ``(d,)``."""
    return mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, mean.dtype)


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """``KL(N(mean, diag exp(log_var)) || N(0, I))`` summed over the latent ``(d,)`` -> scalar.

    .. math:: \\tfrac12 \\sum_k (\\mu_k^2 + \\sigma_k^2 - \\log \\sigma_k^2 - 1)
    """
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - log_var - 1.0)


def log_likelihood(x: jax.Array, recon: jax.Array, likelihood: str = "sse") -> jax.Array:
    """``log p(x | z)`` of ONE example up to a constant, summed over its entries.

    - ``"sse"``: ``-||x - recon||^2`` (the GCE authors' code; a Gaussian of variance 1/2).
    - ``"gaussian"``: ``-||x - recon||^2 / 2`` (unit variance).
    - ``"bernoulli"``: ``sum x log recon + (1 - x) log(1 - recon)``, ``recon`` in (0, 1), clamped.
    """
    if likelihood == "sse":
        return -jnp.sum(jnp.square(x - recon))
    if likelihood == "gaussian":
        return -0.5 * jnp.sum(jnp.square(x - recon))
    if likelihood == "bernoulli":
        eps = jnp.asarray(1e-6, recon.dtype)
        r = jnp.clip(recon, eps, 1 - eps)
        return jnp.sum(x * jnp.log(r) + (1 - x) * jnp.log1p(-r))
    raise ValueError(f"likelihood = {likelihood!r}: choose one of {LIKELIHOODS}")


def elbo(x: jax.Array, recon: jax.Array, mean: jax.Array, log_var: jax.Array,
         likelihood: str = "sse") -> jax.Array:
    """The evidence lower bound of ONE example, ``log p(x | z) - KL(q(z | x) || p(z))`` (scalar),
    with ``z`` the single reparameterised draw that produced ``recon``."""
    return log_likelihood(x, recon, likelihood) - gaussian_kl(mean, log_var)


class ConvEncoder(nnx.Module):
    """GCE Table 2 encoder: conv64 4x4/2 pad 1 - ReLU - conv64 4x4/2 pad 1 - ReLU - conv64 4x4/1
    pad 0 - ReLU - two linear heads (mean and log-variance of ``latent`` factors).

    Call on ONE image ``(28, 28)``, ``(28, 28, 1)`` or ``(784,)`` -> ``(mean, log_var)``, each
    ``(latent,)``. ``init_log_var`` is the initial bias of the log-variance head: a negative value
    (sharp initial posteriors) shortens the plateau where the decoder ignores ``z``.
    """

    def __init__(self, latent: int, *, input_shape=(28, 28, 1), channels: int = 64,
                 init_log_var: float = 0.0, rngs: nnx.Rngs):
        h, w, c = input_shape
        self.input_shape = tuple(input_shape)
        self.conv1 = Conv2d(c, channels, 4, stride=2, padding=1, rngs=rngs)
        self.conv2 = Conv2d(channels, channels, 4, stride=2, padding=1, rngs=rngs)
        self.conv3 = Conv2d(channels, channels, 4, stride=1, padding=0, rngs=rngs)
        flat = (h // 4 - 3) * (w // 4 - 3) * channels
        self.mean = nnx.Linear(flat, latent, rngs=rngs)
        self.log_var = nnx.Linear(flat, latent, bias_init=nnx.initializers.constant(init_log_var),
                                  rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = x.reshape(self.input_shape)[None]
        x = jax.nn.relu(self.conv1(x))
        x = jax.nn.relu(self.conv2(x))
        x = jax.nn.relu(self.conv3(x)).reshape(-1)
        return self.mean(x), self.log_var(x)


def conv_im2col(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """A 'VALID' correlation as one matrix product over stacked (strided) shifted views.

    ``x`` ``(N, H, W, C_in)``, ``kernel`` ``(a, b, C_in, C_out)`` -> ``(N, (H - a) // s + 1,
    (W - b) // s + 1, C_out)``. Equal to ``lax.conv_general_dilated``; its gradients are slices,
    pads and matrix products. Kept as an alternative: with the XLA:CPU options jcausal compiles
    with (see the README), XLA's own convolution (:func:`conv_valid`, used by the layers here) is
    faster; under XLA:CPU's default options, convolutions with a materialised output run
    single-threaded and im2col was faster. The two agree to round-off (tests/models).
    """
    a, b, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    s = int(stride)
    oh, ow = (h - a) // s + 1, (w - b) // s + 1
    cols = jnp.concatenate([x[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s, :]
                            for i in range(a) for j in range(b)], axis=-1)
    return cols @ kernel.reshape(a * b * cin, cout)


def conv_valid(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0) -> jax.Array:
    """A 'VALID' correlation of ``x`` zero-padded by ``padding`` on each spatial side,
    ``lax.conv_general_dilated`` in NHWC/HWIO (with ``padding=0`` the same shapes as
    :func:`conv_im2col`). The padding is an explicit ``jnp.pad``: the convolution's own padding
    makes the gradients many times slower on XLA:CPU."""
    s, p = int(stride), int(padding)
    if p:
        x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    return jax.lax.conv_general_dilated(x, kernel, (s, s), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv2d(nnx.Module):
    """A 2-D convolution with PyTorch's ``Conv2d(c_in, c_out, k, stride, padding)`` semantics,
    computed by :func:`conv_valid`. ``kernel`` ``(k, k, c_in, c_out)``
    (like ``nnx.Conv``), ``bias`` ``(c_out,)``. Acts on ``(N, H, W, c_in)``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
                 rngs: nnx.Rngs):
        self.stride, self.padding = int(stride), int(padding)
        bound = 1.0 / float(c_in * kernel_size * kernel_size) ** 0.5  # PyTorch's default init
        self.kernel = nnx.Param(jax.random.uniform(
            rngs.params(), (kernel_size, kernel_size, c_in, c_out), minval=-bound, maxval=bound))
        self.bias = nnx.Param(jax.random.uniform(rngs.params(), (c_out,), minval=-bound, maxval=bound))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv_valid(x, self.kernel[...], self.stride, self.padding)
        return y + self.bias[...].reshape(1, 1, 1, -1)


def conv_transpose(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """PyTorch-convention 2-D transposed convolution, as stride-1 convolutions (sub-pixel form).

    ``y_full[s i + t] += x[i] kernel[t]`` per spatial axis, then ``padding`` is cropped from each
    side: output size ``(H - 1) s + k - 2 p``. Instead of convolving an input dilated by ``s``
    (whose gradient is far slower than a plain convolution on XLA:CPU), the kernel is split into
    its ``s * s`` phases ``kernel[s j + r]``: one stride-1 convolution with ``s * s * C_out``
    output channels, then depth-to-space.

    Args:
      x: ``(N, H, W, C_in)``.
      kernel: ``(k, k, C_in, C_out)`` with ``k`` a multiple of ``stride``.
      stride, padding: PyTorch's ``stride`` and ``padding``.

    Returns:
      ``(N, (H - 1) s + k - 2 p, (W - 1) s + k - 2 p, C_out)``.
    """
    k, _, cin, cout = kernel.shape
    s, p = int(stride), int(padding)
    if k % s:
        raise ValueError(f"kernel size {k} must be a multiple of the stride {s}")
    m = k // s
    n, h, w, _ = x.shape
    # phase kernels, flipped for correlation: v[j1, j2, ci, (r1, r2, co)] = kernel[s(m-1-j1)+r1, ...]
    v = kernel.reshape(m, s, m, s, cin, cout)[::-1, :, ::-1, :]
    v = v.transpose(0, 2, 4, 1, 3, 5).reshape(m, m, cin, s * s * cout)
    out_h, out_w = (h - 1) * s + k - 2 * p, (w - 1) * s + k - 2 * p
    if out_h < 1 or out_w < 1:
        raise ValueError(f"padding {p} leaves no output: ({h}, {w}) inputs, kernel {k}, stride {s}")
    # Phase row q of the uncropped output covers rows s q .. s q + s - 1; only the phase rows that
    # meet the kept rows [p, p + out) are computed (padding m - 1 and cropping p would compute
    # rows that are cropped away).
    crops, pads, nq = [], [], []
    for size, out in ((h, out_h), (w, out_w)):
        q0, q1 = p // s, (p + out - 1) // s
        crops.append(p - s * q0)
        pads.append((m - 1 - q0, q1 - size + 1, 0))  # negative values slice
        nq.append(q1 - q0 + 1)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), pads[0], pads[1], (0, 0, 0)))
    y = conv_valid(x, v)
    hh, ww = nq
    y = y.reshape(n, hh, ww, s, s, cout).transpose(0, 1, 3, 2, 4, 5).reshape(n, hh * s, ww * s, cout)
    return y[:, crops[0]:crops[0] + out_h, crops[1]:crops[1] + out_w, :]


class ConvTranspose2d(nnx.Module):
    """A transposed convolution with PyTorch's ``ConvTranspose2d(c_in, c_out, k, stride, padding)``
    semantics (:func:`conv_transpose`); ``kernel`` ``(k, k, c_in, c_out)`` (PyTorch's weight
    ``(c_in, c_out, k, k)`` transposed), ``bias`` ``(c_out,)``. Acts on ``(N, H, W, c_in)``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
                 rngs: nnx.Rngs):
        self.stride, self.padding = int(stride), int(padding)
        bound = 1.0 / float(c_out * kernel_size * kernel_size) ** 0.5  # PyTorch's default init
        self.kernel = nnx.Param(jax.random.uniform(
            rngs.params(), (kernel_size, kernel_size, c_in, c_out), minval=-bound, maxval=bound))
        self.bias = nnx.Param(jax.random.uniform(rngs.params(), (c_out,), minval=-bound, maxval=bound))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv_transpose(x, self.kernel[...], self.stride, self.padding)
        return y + self.bias[...].reshape(1, 1, 1, -1)


class ConvDecoder(nnx.Module):
    """GCE Table 2 decoder: linear 3136 - ReLU - convT64 4x4/1 pad 1 - ReLU - convT64 4x4/2 pad 2
    - ReLU - convT1 4x4/2 pad 1 - sigmoid (PyTorch padding conventions: 7 -> 8 -> 14 -> 28).

    Call on ONE latent ``(latent,)`` -> image ``(28, 28, 1)`` in (0, 1).
    """

    def __init__(self, latent: int, *, out_channels: int = 1, channels: int = 64, rngs: nnx.Rngs):
        self.channels = channels
        self.fc = nnx.Linear(latent, 7 * 7 * channels, rngs=rngs)
        self.deconv1 = ConvTranspose2d(channels, channels, 4, stride=1, padding=1, rngs=rngs)
        self.deconv2 = ConvTranspose2d(channels, channels, 4, stride=2, padding=2, rngs=rngs)
        self.deconv3 = ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1, rngs=rngs)

    def logits(self, z: jax.Array) -> jax.Array:
        """The pre-sigmoid image ``(28, 28, out_channels)``."""
        x = jax.nn.relu(self.fc(z)).reshape(1, 7, 7, self.channels)
        x = jax.nn.relu(self.deconv1(x))
        x = jax.nn.relu(self.deconv2(x))
        return self.deconv3(x)[0]

    def __call__(self, z: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(self.logits(z))


class MLPEncoder(nnx.Module):
    """Dense encoder ``sizes[0] -> ... -> sizes[-1]`` (hidden activation) then linear heads for the
    mean and log-variance of ``latent`` factors. ONE input ``(sizes[0],)`` -> two ``(latent,)``."""

    def __init__(self, sizes: Sequence[int], latent: int, *, activation: str = "relu", rngs: nnx.Rngs):
        sizes = tuple(int(s) for s in sizes)
        self.act = get_activation(activation)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.mean = nnx.Linear(sizes[-1], latent, rngs=rngs)
        self.log_var = nnx.Linear(sizes[-1], latent, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        for layer in self.layers:
            x = self.act(layer(x))
        return self.mean(x), self.log_var(x)


class MLPDecoder(nnx.Module):
    """Dense decoder ``latent -> sizes[0] -> ... -> sizes[-1]`` with the hidden activation between
    layers and ``output`` (``"identity"`` or ``"sigmoid"``, ...) at the end. ``(latent,)`` ->
    ``(sizes[-1],)``."""

    def __init__(self, latent: int, sizes: Sequence[int], *, activation: str = "relu",
                 output: str = "identity", rngs: nnx.Rngs):
        dims = (int(latent), *(int(s) for s in sizes))
        self.act = get_activation(activation)
        self.out = get_activation(output)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])

    def __call__(self, z: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            z = self.act(layer(z))
        return self.out(self.layers[-1](z))


class VAE(nnx.Module):
    """An encoder ``x -> (mean, log_var)`` and a decoder ``z -> x_hat`` on ONE example.

    ``model(x, key=k)`` -> :class:`VAEOutput` (reparameterised ``z``; ``key=None`` uses the mean).
    ``model.elbo(x, key)`` -> scalar ELBO with ``likelihood`` (see :func:`log_likelihood`).
    """

    def __init__(self, encoder: nnx.Module, decoder: nnx.Module, *, likelihood: str = "sse"):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood = {likelihood!r}: choose one of {LIKELIHOODS}")
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> VAEOutput:
        mean, log_var = self.encoder(x)
        z = mean if key is None else reparameterize(key, mean, log_var)
        return VAEOutput(self.decoder(z), mean, log_var, z)

    def elbo(self, x: jax.Array, key: jax.Array) -> jax.Array:
        out = self(x, key=key)
        return elbo(x.reshape(out.recon.shape), out.recon, out.mean, out.log_var, self.likelihood)


def conv_vae(latent: int, *, rngs: nnx.Rngs, likelihood: str = "sse", channels: int = 64,
             init_log_var: float = 0.0) -> VAE:
    """The GCE paper's Table 2 VAE for 28x28 single-channel images, ``latent = K + L``."""
    return VAE(ConvEncoder(latent, channels=channels, init_log_var=init_log_var, rngs=rngs),
               ConvDecoder(latent, channels=channels, rngs=rngs), likelihood=likelihood)


def mlp_vae(features: int, latent: int, *, hidden: Sequence[int] = (64, 64), activation: str = "relu",
            output: str = "identity", likelihood: str = "gaussian", rngs: nnx.Rngs) -> VAE:
    """A small dense VAE for tabular data: ``features -> hidden -> latent -> hidden[::-1] ->
    features``."""
    hidden = tuple(hidden)
    return VAE(MLPEncoder((features, *hidden), latent, activation=activation, rngs=rngs),
               MLPDecoder(latent, (*hidden[::-1], features), activation=activation, output=output,
                          rngs=rngs), likelihood=likelihood)
