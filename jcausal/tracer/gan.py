"""TRACER's counterfactual GAN (section 3.3, appendix A): the networks, the losses and the training.

Generator ``G``: an encoder ``E_x`` maps ONE input to ``z_x``; the one-hot target ``o(y*)`` is
concatenated; a decoder gives the counterfactual ``x* = D([z_x; o(y*)])``. A discriminator scores
real versus generated inputs. Training minimises

.. math:: \\mathcal{L} = (1 - \\lambda) \\mathcal{L}_{GAN} + \\lambda\\, d(x^*, x_{nn})

with ``x_nn`` the exact nearest training instance of class ``y*`` to the input ``x`` (Euclidean;
the seed leaves "nearest to what" open: nearest to ``x`` makes ``x*`` the realistic minimal change of
``x``, and the table of neighbours is computed once), ``L_GAN`` the non-saturating GAN loss and
``d`` the Euclidean distance. optax Adam, lr 1e-3 (the paper's setting).

Building blocks come from :mod:`jcausal.models.vae`: images use :class:`ConvEncoder` (three
convolutions and a linear head: the paper's four layers) and :class:`ConvDecoder`; tabular data use
:class:`MLPEncoder` / :class:`MLPDecoder` (sigmoid output for min-max scaled features). The
discriminator is a :class:`ConvEncoder` / :class:`MLPEncoder` with one output (its mean head).
Training runs on the shared fit loop (:func:`jcausal.models.fit`); generating and evaluating
counterfactuals with a trained GAN is :mod:`jcausal.tracer.counterfactual`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jcausal._src.checks import require_int
from jcausal._src.fit import FitResult, Loop, fit
from jcausal._src.xla import jit
from jcausal.models.checkpoint import save
from jcausal.models.vae import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from jcausal.tracer.constraints import make_constraints, project
from jcausal.tracer.neighbours import NNIndex, nearest, nn_index

__all__ = [
    "DISTANCES", "CounterfactualGAN", "GANFunctions", "GANObjective", "gan_functions", "generator_loss",
    "discriminator_loss", "build_steps", "train_gan", "check_inputs",
]


# ----------------------------------------------------------------------------- models


class _Generator(nnx.Module):
    def __init__(self, encoder, decoder, num_classes: int, input_shape):
        self.encoder, self.decoder = encoder, decoder
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)

    def __call__(self, x: jax.Array, onehot: jax.Array, noise: jax.Array | None = None) -> jax.Array:
        z, _ = self.encoder(x.reshape(self.input_shape))
        z = z if noise is None else z + noise.astype(z.dtype)  # several counterfactuals per input
        return self.decoder(jnp.concatenate([z, onehot.astype(z.dtype)])).reshape(self.input_shape)


class _Discriminator(nnx.Module):
    def __init__(self, body, input_shape):
        self.body, self.input_shape = body, tuple(input_shape)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.body(x.reshape(self.input_shape))[0][0]


class CounterfactualGAN(nnx.Module):
    """The counterfactual GAN: ``generator(x, onehot) -> x*`` and ``discriminator(x) -> logit``, both
    on ONE example.

    Args:
      num_classes: ``k``, length of ``o(y*)``.
      input_shape: ``(28, 28, c)`` for ``kind="image"``; ``(d,)`` for ``kind="tabular"``.
      latent: size of ``z_x``; channels: conv width (image); hidden: dense widths (tabular).
      output_bias: initial bias of the image decoder's last layer (start near MNIST's dark mean pixel,
        sigmoid(-2) = 0.12): from 0 (every pixel 0.5) Adam drove every pixel to 0 within a few dozen
        steps and the decoder never recovered (dead ReLUs).
    """

    def __init__(self, num_classes: int, *, input_shape: Sequence[int] = (28, 28, 1), kind: str = "image",
                 latent: int = 16, channels: int = 32, hidden: Sequence[int] = (64, 64),
                 output_bias: float = -2.0, rngs: nnx.Rngs):
        self.num_classes, self.kind, self.latent = int(num_classes), str(kind), int(latent)
        self.input_shape, self.channels, self.hidden = tuple(int(s) for s in input_shape), int(channels), \
            tuple(int(h) for h in hidden)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if kind == "image":
            if len(self.input_shape) != 3 or self.input_shape[:2] != (28, 28):
                raise ValueError(f"kind='image' needs input_shape (28, 28, c), got {self.input_shape}")
            c = self.input_shape[2]
            enc = ConvEncoder(latent, input_shape=self.input_shape, channels=channels, rngs=rngs)
            dec = ConvDecoder(latent + self.num_classes, out_channels=c, channels=channels, rngs=rngs)
            dec.deconv3.bias[...] = jnp.full((c,), output_bias, jnp.float32)
            body = ConvEncoder(1, input_shape=self.input_shape, channels=channels, rngs=rngs)
        elif kind == "tabular":
            if len(self.input_shape) != 1:
                raise ValueError(f"kind='tabular' needs input_shape (d,), got {self.input_shape}")
            d = self.input_shape[0]
            enc = MLPEncoder((d, *self.hidden), latent, rngs=rngs)
            dec = MLPDecoder(latent + self.num_classes, (*self.hidden[::-1], d), output="sigmoid", rngs=rngs)
            body = MLPEncoder((d, *self.hidden), 1, activation="elu", rngs=rngs)
        else:
            raise ValueError(f"kind = {kind!r}: choose 'image' or 'tabular'")
        self.generator = _Generator(enc, dec, self.num_classes, self.input_shape)
        self.discriminator = _Discriminator(body, self.input_shape)


class GANFunctions(NamedTuple):
    """Pure functions of ONE example (``vmap`` them): ``generate(g_params, x, onehot) -> x*``,
    ``discriminate(d_params, x) -> logit``; ``g_params``/``d_params``: the initial states."""

    generate: Callable
    discriminate: Callable
    g_params: nnx.State
    d_params: nnx.State


def gan_functions(gan: CounterfactualGAN) -> GANFunctions:
    """Split a :class:`CounterfactualGAN` into pure functions and its two parameter states."""
    g_def, g_params = nnx.split(gan.generator)
    d_def, d_params = nnx.split(gan.discriminator)

    def generate(p, x, onehot):
        return nnx.merge(g_def, p)(x, onehot)

    def discriminate(p, x):
        return nnx.merge(d_def, p)(x)

    return GANFunctions(generate, discriminate, g_params, d_params)


DISTANCES = ("euclidean", "squared")


def _dist(a, b, distance: str = "euclidean"):
    """Euclidean (or squared Euclidean) distance per example, ``(b, ...)`` x2 -> ``(b,)`` (a tiny floor
    keeps the Euclidean gradient finite when ``a == b``)."""
    sq = jnp.sum(jnp.square(a - b).reshape(a.shape[0], -1), -1)
    if distance == "squared":
        return sq
    return jnp.sqrt(sq + jnp.asarray(1e-12, sq.dtype))


def generator_loss(fns: GANFunctions, g_params, d_params, x, onehot, x_nn, lam,
                   distance: str = "euclidean", l1=None, cons=None):
    """``(1 - lam) L_GAN + lam mean_i d(x*_i, x_nn_i) + l1 mean_i ||x*_i - x_i||_1`` on a batch.

    The first two terms are section 3.3's objective; the L1 proximity term (``l1 >= 0``, default
    off: ``None`` leaves it out of the computation) pulls the counterfactual's change towards few
    features (Wachter et al. 2017's L1 distance).
    ``x``, ``x_nn``: ``(b, *input_shape)``; ``onehot``: ``(b, k)``; ``lam``: scalar in [0, 1];
    ``distance``: ``"euclidean"`` (the paper's example) or ``"squared"`` (its square: on MNIST the
    Euclidean distance, minimised by a geometric median, drives sparse digits to blank images);
    ``cons``: ``None`` or ``(mutable, low, high)`` arrays of ``input_shape``: ``x*`` is projected
    (:func:`~jcausal.tracer.project`) before the loss, so the generator learns under the
    constraints it is used with.
    ``L_GAN = mean -log sigmoid(D(x*))`` (non-saturating). Returns ``(loss, (L_GAN, d))``.
    """
    fake = _fake(fns, g_params, x, onehot, cons)
    logits = jax.vmap(fns.discriminate, in_axes=(None, 0))(d_params, fake)
    l_gan = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.ones_like(logits)))
    d = jnp.mean(_dist(fake, x_nn, distance))
    loss = (1.0 - lam) * l_gan + lam * d
    if l1 is not None:
        loss = loss + l1 * jnp.mean(jnp.sum(jnp.abs(fake - x).reshape(x.shape[0], -1), -1))
    return loss, (l_gan, d)


def _fake(fns: GANFunctions, g_params, x, onehot, cons):
    fake = jax.vmap(fns.generate, in_axes=(None, 0, 0))(g_params, x, onehot)
    return fake if cons is None else project(fake, x, cons[0][None] > 0, cons[1][None], cons[2][None])


def discriminator_loss(fns: GANFunctions, d_params, real, fake):
    """Binary cross-entropy of real ``(b, ...)`` (label 1) and generated ``(b, ...)`` (label 0)."""
    lr = jax.vmap(fns.discriminate, in_axes=(None, 0))(d_params, real)
    lf = jax.vmap(fns.discriminate, in_axes=(None, 0))(d_params, fake)
    return (jnp.mean(optax.sigmoid_binary_cross_entropy(lr, jnp.ones_like(lr)))
            + jnp.mean(optax.sigmoid_binary_cross_entropy(lf, jnp.zeros_like(lf))))


class _Steps(NamedTuple):
    d_step: Callable
    g_step: Callable


def build_steps(fns: GANFunctions, tx_g: optax.GradientTransformation,
                tx_d: optax.GradientTransformation, *, distance: str = "euclidean") -> _Steps:
    """The two jitted updates; every array is an argument (nothing closed over):

    - ``d_step(d_params, d_opt, g_params, data, idx, real_idx, onehot, cons=None) -> (d_params,
      d_opt, loss)``
    - ``g_step(g_params, g_opt, d_params, data, idx, nn_rows, onehot, lam, l1=None, cons=None) ->
      (g_params, g_opt, loss, (L_GAN, d))``

    ``data`` ``(n, *input_shape)`` stays on the device; ``idx``/``real_idx``/``nn_rows`` ``(b,)``
    pick the inputs, real examples and their target-class nearest neighbours; ``l1`` and ``cons``
    as in :func:`generator_loss`.
    """

    @jit
    def d_step(d_params, d_opt, g_params, data, idx, real_idx, onehot, cons=None):
        fake = jax.lax.stop_gradient(_fake(fns, g_params, data[idx], onehot, cons))
        loss, grads = jax.value_and_grad(discriminator_loss, argnums=1)(fns, d_params, data[real_idx], fake)
        with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
            upd, d_opt = tx_d.update(grads, d_opt, d_params)
        return optax.apply_updates(d_params, upd), d_opt, loss

    @jit
    def g_step(g_params, g_opt, d_params, data, idx, nn_rows, onehot, lam, l1=None, cons=None):
        (loss, aux), grads = jax.value_and_grad(generator_loss, argnums=1, has_aux=True)(
            fns, g_params, d_params, data[idx], onehot, data[nn_rows], lam, distance, l1, cons)
        with jax.numpy_dtype_promotion("standard"):
            upd, g_opt = tx_g.update(grads, g_opt, g_params)
        return optax.apply_updates(g_params, upd), g_opt, loss, aux

    return _Steps(d_step, g_step)


def check_inputs(gan: CounterfactualGAN, x) -> jax.Array:
    """``x`` as ``(n, *gan.input_shape)`` float32; accepts flattened examples and, for one channel,
    ``(n, H, W)``. Raises ValueError naming the shapes otherwise."""
    x = jnp.asarray(x, jnp.float32)
    shape = gan.input_shape
    size = int(np.prod(shape))
    ok = x.ndim >= 2 and (x.shape[1:] == shape or x.shape[1:] == (size,)
                          or (len(shape) == 3 and shape[2] == 1 and x.shape[1:] == shape[:2]))
    if not ok:
        raise ValueError(f"expected inputs of shape (n, {', '.join(map(str, shape))}) (or (n, {size})), "
                         f"got {tuple(x.shape)}")
    return x.reshape(x.shape[0], *shape)


def _save_gan(path: Path, gan, fns, g_params, d_params, meta: dict) -> None:
    nnx.update(gan.generator, g_params)
    nnx.update(gan.discriminator, d_params)
    save(path, gan, metadata=meta)


@dataclasses.dataclass(frozen=True)
class GANObjective:
    """What the generator is trained to minimise besides the GAN loss (the loss is
    ``jcausal.tracer.gan.generator_loss``). Validated when built.

    Fields:
      distance: ``d``, ``"euclidean"`` (the paper's example) or ``"squared"``.
      l1: weight of the L1 proximity term ``||x* - x||_1`` (default off: sparsity comes from
        :func:`~jcausal.tracer.counterfactuals`' decoding).
      immutable, ranges, feature_names, scaler: constraints the counterfactuals will be asked to
        satisfy (:func:`~jcausal.tracer.make_constraints`: names or indices, ranges in the data's
        units); the generator's output is projected onto them during training.
    """

    distance: str = "euclidean"
    l1: float = 0.0
    immutable: Any = None
    ranges: Any = None
    feature_names: Any = None
    scaler: Any = None

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"distance = {self.distance!r}: choose one of {DISTANCES}")
        if not (np.isfinite(self.l1) and self.l1 >= 0):
            raise ValueError(f"l1 = {self.l1}: must be finite and >= 0")


_DEFAULT_LOOP = Loop(log_every=10)


def _targets(x, y, k: int, index: NNIndex | None):
    """The index, and for every (input, class) the row of its nearest instance of that class
    ``(n, k)`` and per class the other present classes ``(k, P - 1)`` (computed once, exactly)."""
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(y) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {len(y)} labels")
    if not np.all(np.isfinite(np.asarray(x))):
        raise ValueError("training inputs must be finite")
    index = nn_index(x, y, k) if index is None else index
    present = np.flatnonzero(index.counts > 0)
    if len(present) < 2:
        raise ValueError(f"need training instances of at least two classes, got classes {present.tolist()}")
    table = np.full((len(y), k), -1, np.int64)
    for c in present:
        table[:, c] = nearest(index, x, np.full(len(y), c))[0]
    # others[c]: the present classes other than c (a label without a present peer keeps all present)
    others = np.stack([np.resize(present[present != c], len(present) - 1) for c in range(k)])
    return index, y, table, others


@jit
def _draw(data, idx, key):
    """Real examples for the discriminator, targets ``y*`` uniform over the other classes, their
    one-hot codes and the rows of ``x_nn`` for a batch ``idx``."""
    k_real, k_tgt = jax.random.split(key)
    n, bs = data["y"].shape[0], idx.shape[0]
    real = jax.random.randint(k_real, (bs,), 0, n)
    others = data["others"][idx]  # (bs, P - 1) the classes other than each input's own
    tgt = jnp.take_along_axis(others, jax.random.randint(k_tgt, (bs, 1), 0, others.shape[1]), 1)[:, 0]
    onehot = jax.nn.one_hot(tgt, data["table"].shape[1], dtype=jnp.float32)
    return real, onehot, data["table"][idx, tgt]


def train_gan(gan: CounterfactualGAN, x, y, *, key: jax.Array, steps: int, lam: float = 0.5,
              batch_size: int = 64, learning_rate: float = 1e-3, index: NNIndex | None = None,
              objective: GANObjective | None = None, loop: Loop | None = None) -> FitResult:
    """Train the counterfactual GAN on labelled data (section 3.3); ``gan`` is updated in place.

    Each step takes a batch of inputs ``x_i`` (a seeded permutation per epoch), targets ``y*_i``
    uniform over the other classes that have instances, real examples for the discriminator, and
    ``x_nn`` = the exact nearest instance of class ``y*_i`` to ``x_i`` (looked up in a table
    computed once with :func:`~jcausal.tracer.nearest`); then one discriminator and one generator
    Adam step, on the shared fit loop (:func:`jcausal.models.fit`).

    Args:
      gan: the module; x: ``(n, *input_shape)``; y: ``(n,)`` classes in ``[0, k)``: the classifier's
        (:func:`~jcausal.tracer.model_labels`), since ``y*`` is a model output, ideally of
        confident inputs only.
      key: PRNG key (the run is reproducible from it); steps: iterations (>= 1).
      lam: ``lambda`` in [0, 1]; batch_size; learning_rate: Adam's (paper: 1e-3).
      index: a prebuilt :func:`~jcausal.tracer.nn_index` of ``(x, y)`` (built here otherwise).
      objective: :class:`GANObjective` (distance, L1 weight, constraints); default the paper's.
      loop: :class:`~jcausal.models.Loop`; default ``Loop(log_every=10)``. Checkpoints are an
        atomic :func:`jcausal.models.save` of the whole GAN (every ``checkpoint_every`` steps, at
        the end, and with the last finite parameters when a loss turns NaN/inf).

    Returns:
      :class:`~jcausal.models.FitResult`: ``state`` ``(g_params, d_params)``, history ``step``,
      ``loss`` (G + D), ``g_loss``, ``d_loss``, ``gan``, ``dist``; ``index`` the
      :class:`~jcausal.tracer.NNIndex` of the training data.
    """
    objective = GANObjective() if objective is None else objective
    loop = _DEFAULT_LOOP if loop is None else loop
    lam, l1 = float(lam), objective.l1
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam = {lam}: lambda must lie in [0, 1]")
    for name, v in (("steps", steps), ("batch_size", batch_size)):  # objective and loop: checked when built
        require_int(v, name)
    x = check_inputs(gan, x)
    cons = make_constraints(int(np.prod(gan.input_shape)), immutable=objective.immutable,
                            ranges=objective.ranges, feature_names=objective.feature_names,
                            scaler=objective.scaler)
    cons_arr = cons.arrays(gan.input_shape) if cons.constrained else None
    index, y, table, others = _targets(x, y, gan.num_classes, index)
    fns = gan_functions(gan)
    tx_g, tx_d = optax.adam(learning_rate), optax.adam(learning_rate)
    st = build_steps(fns, tx_g, tx_d, distance=objective.distance)
    with jax.numpy_dtype_promotion("standard"):
        state = (fns.g_params, tx_g.init(fns.g_params), fns.d_params, tx_d.init(fns.d_params))
    lam_arr = jnp.asarray(lam, jnp.float32)
    l1_arr = jnp.asarray(l1, jnp.float32) if l1 > 0 else None  # off: the paper's objective, as traced before

    def step(state, data, idx, k):
        g_params, g_opt, d_params, d_opt = state
        real, onehot, nn_rows = _draw(data, idx, k)
        d_params, d_opt, d_loss = st.d_step(d_params, d_opt, g_params, data["x"], idx, real, onehot, cons_arr)
        g_params, g_opt, g_loss, (l_gan, dist) = st.g_step(g_params, g_opt, d_params, data["x"], idx, nn_rows,
                                                           onehot, lam_arr, l1_arr, cons_arr)
        return (g_params, g_opt, d_params, d_opt), {"loss": g_loss + d_loss, "g_loss": g_loss,
                                                    "d_loss": d_loss, "gan": l_gan, "dist": dist}

    def write(path, state, meta):
        _save_gan(path, gan, fns, state[0], state[2], {"step": meta["step"], "lam": lam, "l1": float(l1)}
                  | ({"nonfinite_step": meta["nonfinite_step"]} if "nonfinite_step" in meta else {}))

    data = {"x": x, "y": jnp.asarray(y, jnp.int32), "table": jnp.asarray(table, jnp.int32),
            "others": jnp.asarray(others[y], jnp.int32)}
    res = fit(step, state, data, key=key, steps=steps, batch_size=min(int(batch_size), len(y)), loop=loop,
              save=write, desc="counterfactual GAN")
    g_params, _, d_params, _ = res.state
    nnx.update(gan.generator, g_params)
    nnx.update(gan.discriminator, d_params)
    return res._replace(state=(g_params, d_params), aux={"index": index})
