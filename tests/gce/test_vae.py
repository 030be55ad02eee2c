"""VAE building blocks (jcausal.models.vae) against independent references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.models.vae import (
    conv_im2col,
    conv_transpose,
    conv_vae,
    elbo,
    gaussian_kl,
    mlp_vae,
    reparameterize,
)


def scatter_transpose(x, w, s, p):
    """PyTorch ConvTranspose2d by its definition: every input pixel scatters a kernel-sized patch
    (differentiable; call it under ``jax.enable_x64()`` with float64 inputs for a reference)."""
    n, h, ww, _ = x.shape
    k, co = w.shape[0], w.shape[3]
    H, W = (h - 1) * s + k, (ww - 1) * s + k
    y = jnp.zeros((n, H, W, co), x.dtype)
    for i in range(h):
        for j in range(ww):
            patch = jnp.einsum("nc,abco->nabo", x[:, i, j, :], w)
            y = y.at[:, s * i:s * i + k, s * j:s * j + k, :].add(patch)
    return y[:, p:H - p, p:W - p, :]


# (7, 1, 1), (8, 2, 2), (14, 2, 1): the Table 2 decoder's layers; the others crop whole phase rows
# (p >= s), more than the kernel's reach (p = 4: the input itself is sliced), or non-square inputs
@pytest.mark.parametrize("h, wd, s, p", [(7, 7, 1, 1), (8, 8, 2, 2), (14, 14, 2, 1), (3, 3, 2, 0),
                                         (5, 6, 2, 3), (4, 4, 1, 3), (4, 5, 2, 4), (6, 3, 1, 2)])
def test_conv_transpose_matches_definition(h, wd, s, p):
    rng = np.random.default_rng(h)
    x, w = rng.normal(size=(2, h, wd, 3)), rng.normal(size=(4, 4, 3, 5))
    got = conv_transpose(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), s, p)
    with jax.enable_x64():
        want = np.asarray(scatter_transpose(jnp.asarray(x), jnp.asarray(w), s, p))
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_conv_transpose_gradient_and_bad_padding():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 8, 8, 3)), rng.normal(size=(4, 4, 3, 5))
    loss = lambda x, w: jnp.sum(jnp.sin(conv_transpose(x, w, 2, 2)))  # noqa: E731
    with jax.enable_x64():
        got = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(w))
        # reference: the same loss through the scatter definition, differentiated by JAX in float64
        want = jax.grad(lambda x, w: jnp.sum(jnp.sin(scatter_transpose(x, w, 2, 2))), argnums=(0, 1))(
            jnp.asarray(x), jnp.asarray(w))
    for g, r in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="padding 4 leaves no output"):
        conv_transpose(jnp.zeros((1, 1, 1, 3)), jnp.zeros((4, 4, 3, 5)), 1, 4)


@pytest.mark.parametrize("h, k, s, p", [(28, 4, 2, 1), (7, 4, 1, 0), (9, 3, 2, 0)])
def test_conv_im2col_matches_lax(h, k, s, p):
    rng = np.random.default_rng(k)
    x = jnp.asarray(rng.normal(size=(2, h, h, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, 3, 5)), jnp.float32)
    got = conv_im2col(jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))), w, s)
    want = jax.lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)


def test_table2_shapes_and_elbo():
    graphdef, params = nnx.split(conv_vae(8, rngs=nnx.Rngs(0)))

    @jax.jit  # one compiled program instead of hundreds of eager ops
    def run(params, x, key):
        vae = nnx.merge(graphdef, params)
        return vae(x, key=key), vae.elbo(x, key)

    x = jax.random.uniform(jax.random.key(0), (28, 28))
    out, value = run(params, x, jax.random.key(1))
    assert out.recon.shape == (28, 28, 1) and out.mean.shape == (8,) and out.z.shape == (8,)
    assert float(out.recon.min()) > 0 and float(out.recon.max()) < 1
    want = -float(jnp.sum((x[..., None] - out.recon) ** 2)) - float(gaussian_kl(out.mean, out.log_var))
    assert float(value) == pytest.approx(want, rel=1e-5)
    tab = mlp_vae(5, 2, rngs=nnx.Rngs(0))
    assert tab(jnp.ones(5)).recon.shape == (5,)


def test_gaussian_kl_against_monte_carlo():
    mean, log_var = jnp.asarray([0.5, -1.0]), jnp.asarray([0.2, -0.7])
    z = jax.vmap(lambda k: reparameterize(k, mean, log_var))(jax.random.split(jax.random.key(0), 200_000))
    logq = jax.scipy.stats.norm.logpdf(z, mean[None], jnp.exp(0.5 * log_var)[None]).sum(-1)
    logp = jax.scipy.stats.norm.logpdf(z).sum(-1)
    assert float(gaussian_kl(mean, log_var)) == pytest.approx(float(jnp.mean(logq - logp)), abs=0.01)


def test_bernoulli_elbo_is_finite_at_saturation():
    x = jnp.asarray([0.0, 1.0])
    v = elbo(x, jnp.asarray([1.0, 0.0]), jnp.zeros(1), jnp.zeros(1), likelihood="bernoulli")
    assert np.isfinite(float(v))
    with pytest.raises(ValueError, match="likelihood = 'poisson'"):
        elbo(x, x, jnp.zeros(1), jnp.zeros(1), likelihood="poisson")
