"""A conditional beta-VAE (the ACE paper's section 5.4 generative model), built from the VAE blocks
of :mod:`jcausal.models.vae`: continuous latents ``z ~ N(0, I)`` and a one-hot class code ``c``.

``q(z | x, c)`` is a dense encoder on ``[x; c]``; ``p(x | z, c)`` a decoder on ``u = [z; c]`` whose
first layer is linear in ``u`` (so the latent ACE of :mod:`jcausal.ace.latent` runs the fast eqn 2:
one rank-one update of the first layer per intervention). Bernoulli pixel likelihood, and the
KL term weighted by ``beta`` (Higgins et al. 2017; the paper uses beta = 10).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jcausal._src.checks import require_int
from jcausal._src.fit import FitResult, Loop, TrainingDiverged, fit
from jcausal._src.xla import jit
from jcausal.models.vae import (
    ConvDecoder,
    MLPDecoder,
    MLPEncoder,
    gaussian_kl,
    log_likelihood,
    reparameterize,
)

__all__ = ["ConditionalVAE", "LatentDecoder", "train_cvae"]


class LatentDecoder(nnx.Module):
    """A decoder on ONE latent vector ``u (latent,)`` exposing its first affine layer, so that
    :func:`jcausal.models.split_functional` splits it (``first_affine``, ``after_first``).

    Wraps :class:`jcausal.models.vae.MLPDecoder` or :class:`jcausal.models.vae.ConvDecoder`.
    """

    def __init__(self, decoder: nnx.Module):
        if not isinstance(decoder, (MLPDecoder, ConvDecoder)):
            raise TypeError(f"LatentDecoder wraps an MLPDecoder or ConvDecoder, got {type(decoder).__name__}")
        self.decoder = decoder

    def first_affine(self, u: jax.Array) -> jax.Array:
        d = self.decoder
        return d.layers[0](u) if isinstance(d, MLPDecoder) else d.fc(u)

    def after_first(self, h: jax.Array, *, key=None) -> jax.Array:
        d = self.decoder
        if isinstance(d, MLPDecoder):
            if len(d.layers) == 1:
                return d.out(h)
            z = d.act(h)
            for layer in d.layers[1:-1]:
                z = d.act(layer(z))
            return d.out(d.layers[-1](z))
        x = jax.nn.relu(h).reshape(1, 7, 7, d.channels)
        x = jax.nn.relu(d.deconv1(x))
        x = jax.nn.relu(d.deconv2(x))
        return jax.nn.sigmoid(d.deconv3(x)[0]).reshape(-1)

    def __call__(self, u: jax.Array) -> jax.Array:
        return self.after_first(self.first_affine(u))


class ConditionalVAE(nnx.Module):
    """Conditional beta-VAE on ONE example.

    Args:
      features: pixels per image (784 for MNIST), images flattened and in [0, 1].
      latent: continuous latents ``z`` (10 in the paper).
      num_classes: size of the one-hot class code ``c``.
      hidden: widths of the dense encoder (the decoder mirrors them).
      beta: weight of the KL term (10 in the paper).
      rngs: ``nnx.Rngs``.

    ``model.decode(z, c)`` -> ``(features,)`` pixel means in (0, 1) for ``z (latent,)`` and a
    one-hot ``c (num_classes,)``; ``model.loss(x, c, key)`` -> scalar ``-(log p(x|z,c) - beta KL)``.
    """

    def __init__(self, features: int = 784, latent: int = 10, num_classes: int = 10, *,
                 hidden: Sequence[int] = (512, 256), beta: float = 10.0, rngs: nnx.Rngs):
        for name, v in (("features", features), ("latent", latent), ("num_classes", num_classes)):
            require_int(v, name)
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        hidden = tuple(int(h) for h in hidden)
        self.features, self.latent, self.num_classes, self.beta = features, latent, num_classes, float(beta)
        self.encoder = MLPEncoder((features + num_classes, *hidden), latent, rngs=rngs)
        self.decoder = LatentDecoder(MLPDecoder(latent + num_classes, (*hidden[::-1], features),
                                                output="sigmoid", rngs=rngs))

    def encode(self, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(jnp.concatenate([x.reshape(-1), c.astype(x.dtype)]))

    def decode(self, z: jax.Array, c: jax.Array) -> jax.Array:
        return self.decoder(jnp.concatenate([z, c.astype(z.dtype)]))

    def loss(self, x: jax.Array, c: jax.Array, key: jax.Array) -> jax.Array:
        x = x.reshape(-1)
        mean, log_var = self.encode(x, c)
        z = reparameterize(key, mean, log_var)
        recon = self.decode(z, c)
        return -(log_likelihood(x, recon, "bernoulli") - self.beta * gaussian_kl(mean, log_var))

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        """Reconstruction from the posterior mean, ``(features,)``."""
        mean, _ = self.encode(x, c)
        return self.decode(mean, c)


def train_cvae(model: ConditionalVAE, X, y, *, key: jax.Array, epochs: int = 20, batch_size: int = 128,
               learning_rate: float = 1e-3, progress: bool = True, checkpoint: str | Path | None = None,
               checkpoint_every: int = 1) -> FitResult:
    """Train a :class:`ConditionalVAE` with optax Adam on the shared fit loop (in place).

    Args:
      X: ``(n, features)`` images in [0, 1] (or ``(n, 28, 28)``); y: ``(n,)`` int class labels.
      key: PRNG key (shuffling and the reparameterisation noise).
      epochs, batch_size, learning_rate: schedule (``n // batch_size`` steps per epoch).
      progress: tqdm bar.
      checkpoint: path written atomically every ``checkpoint_every`` epochs (and at the end) with
        :func:`jcausal.models.save`; a non-finite loss stops training, writes the last good
        parameters there (and into ``model``) and raises ``FloatingPointError`` naming the epoch.

    Returns:
      :class:`~jcausal.models.FitResult`: ``history["loss"]`` the mean loss per epoch (negative
      beta-ELBO, nats per image), ``steps`` the updates applied, ``model`` the module.

    Examples:
      >>> import jax, numpy as np
      >>> from flax import nnx
      >>> from jcausal.models.cvae import ConditionalVAE, train_cvae
      >>> X = (np.random.default_rng(0).uniform(size=(64, 16)) > 0.5).astype(np.float32)
      >>> y = np.arange(64) % 2
      >>> cvae = ConditionalVAE(16, latent=2, num_classes=2, hidden=(8,), rngs=nnx.Rngs(0))
      >>> res = train_cvae(cvae, X, y, key=jax.random.key(0), epochs=2, batch_size=32, progress=False)
      >>> res.steps, len(res.history["loss"])
      (4, 2)
    """
    from jcausal.models.checkpoint import save

    X, y = _checked_data(model, X, y)
    require_int(epochs, "epochs")
    require_int(batch_size, "batch_size")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(learning_rate)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = tx.init(params)
    step = _make_step(graphdef, rest, tx, model.num_classes)
    bs = min(batch_size, X.shape[0])
    nb = X.shape[0] // bs

    def write(path, state, meta):
        nnx.update(model, state[0])
        save(path, model)

    loop = Loop(checkpoint, checkpoint_every * nb, log_every=nb, progress=progress)
    res = fit(step, (params, opt_state), (jnp.asarray(X), jnp.asarray(y, jnp.int32)), key=key,
              steps=epochs * nb, batch_size=bs, loop=loop, save=write, desc="cVAE", average=True)
    nnx.update(model, res.state[0])
    if res.nonfinite_step is not None:
        raise TrainingDiverged(
            f"cVAE loss became non-finite in epoch {(res.nonfinite_step - 1) // nb}"
            + (f"; the last good checkpoint is kept at {checkpoint}" if checkpoint else ""))
    history = {k: v for k, v in res.history.items() if k != "step"}  # one value per epoch
    return res._replace(state=res.state[0], history=history, aux={"model": model})


def _checked_data(model: ConditionalVAE, X, y):
    X = np.asarray(X, np.float32).reshape(len(X), -1)
    y = np.asarray(y)
    if X.shape[1] != model.features:
        raise ValueError(f"X has {X.shape[1]} features per row, the model {model.features}")
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"X and y need the same positive number of rows, got {X.shape[0]} and {y.shape[0]}")
    if np.any((y < 0) | (y >= model.num_classes)):
        raise ValueError(f"labels must lie in [0, {model.num_classes}), got {np.unique(y)[:10].tolist()}")
    if not np.all(np.isfinite(X)) or X.min() < 0 or X.max() > 1:
        raise ValueError("X must hold finite pixel values in [0, 1] (Bernoulli likelihood)")
    return X, y


def _make_step(graphdef, rest, tx, num_classes: int):
    """The jitted Adam step on the negative beta-ELBO of a batch, one noise key per image."""

    def loss_fn(params, xb, yb, k):
        m = nnx.merge(graphdef, params, rest)
        keys = jax.random.split(k, xb.shape[0])
        c = jax.nn.one_hot(yb, num_classes, dtype=xb.dtype)
        return jnp.mean(jax.vmap(m.loss)(xb, c, keys))

    @jit
    def step(state, data, idx, key):
        params, opt_state = state
        X, y = data
        loss, grads = jax.value_and_grad(loss_fn)(params, X[idx], y[idx], key)
        with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
            updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": loss}

    return step
