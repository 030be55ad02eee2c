"""A small, seeded, jit-compiled trainer (optax) shared by every reference model."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jcausal._src.calling import trace_model
from jcausal._src.fit import FitResult, Loop, TrainingDiverged, fit
from jcausal._src.xla import jit
from jcausal.models.core import functional

__all__ = ["train", "predict", "accuracy"]

LOSSES: dict[str, Callable] = {
    "xent": lambda out, y: optax.softmax_cross_entropy_with_integer_labels(out, y),
    "mse": lambda out, y: jnp.mean((out - y) ** 2),
    "bce": lambda out, y: optax.sigmoid_binary_cross_entropy(out.squeeze(-1), y.astype(out.dtype)),
}


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _check_finite(name: str, arrays) -> None:
    for a in arrays:
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            bad = int(np.sum(~np.isfinite(a)))
            raise ValueError(f"{name} contains {bad} NaN/inf values; clean the data before training")


def predict(apply, params, inputs, batch_size: int = 1024):
    """Deterministic outputs of ``apply`` for a batch: ``inputs`` is an array (or tuple of arrays)
    with a leading batch axis ``n``; returns ``(n, ...)``. Memory is bounded by ``batch_size``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jcausal.models import predict
      >>> predict(lambda w, x: w @ x, jnp.eye(2), jnp.ones((3, 2))).shape
      (3, 2)
    """
    inputs = tuple(jnp.asarray(a) for a in _as_tuple(inputs))
    example = tuple(jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in inputs)
    traced, consts = trace_model(apply, params, *example, has_params=True)  # read now, never stale
    return _predict(traced, (params, (consts,)), inputs, batch_size)


@partial(jit, static_argnames=("apply", "batch_size"))
def _predict(apply, params, inputs, batch_size):
    return jax.lax.map(lambda ex: apply(params, *ex), inputs, batch_size=batch_size)


def accuracy(apply, params, inputs, labels, batch_size: int = 1024) -> float:
    """Top-1 accuracy (argmax of outputs; a single output is thresholded at 0).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jcausal.models import accuracy
      >>> apply = lambda w, x: w * x                          # one output: thresholded at 0
      >>> accuracy(apply, jnp.float32(1.0), jnp.array([[1.0], [-1.0], [2.0]]), jnp.array([1, 0, 0]))
      0.6666666865348816
    """
    out = predict(apply, params, inputs, batch_size=batch_size)
    pred = (out[:, 0] > 0).astype(jnp.int32) if out.shape[-1] == 1 else jnp.argmax(out, -1)
    return float(jnp.mean(pred == jnp.asarray(labels)))


def train(
    model: nnx.Module,
    X,
    y,
    *,
    key: jax.Array,
    epochs: int = 10,
    batch_size: int = 64,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    loss: str | Callable = "xent",
    X_val=None,
    y_val=None,
    progress: bool = True,
) -> FitResult:
    """Minibatch training of an NNX module on one-example semantics, on the shared fit loop
    (:func:`jcausal.models.fit`).

    Each epoch draws a seeded permutation and runs ``n // batch_size`` jitted steps on fixed-shape
    batches (the remainder of each permutation is skipped that epoch), with per-example dropout
    keys. Data and parameters travel as arguments, never as closed-over constants.

    Args:
      model: NNX module called as ``model(*inputs, key=...)`` on ONE example.
      X: ``(n, ...)`` array, or a tuple of such arrays (e.g. ``(sequences, lengths)``).
      y: ``(n, ...)`` targets (int labels for ``"xent"``/``"bce"``, values for ``"mse"``).
      key: PRNG key for shuffling and dropout.
      epochs, batch_size: schedule.
      optimizer: an optax transformation (default ``optax.adam(learning_rate)``).
      loss: ``"xent"`` (softmax cross-entropy), ``"bce"`` (sigmoid, one output), ``"mse"``, or a
        callable ``loss(output, target) -> scalar`` for one example.
      X_val, y_val: optional validation data; accuracy (``xent``/``bce``) or loss is recorded.
      progress: show a progress bar over epochs.

    Returns:
      :class:`~jcausal.models.FitResult`: ``model`` the trained module (updated in place too),
      ``state`` its parameters, ``history`` one value per epoch of ``loss`` (the mean over the
      epoch's steps) and ``val_accuracy`` / ``val_loss`` when validation data was given.

    Raises:
      ValueError: NaN/inf in the data, empty data, or mismatched lengths.
      FloatingPointError: the training loss became NaN/inf (the module is left unchanged).

    Examples:
      >>> import jax
      >>> from flax import nnx
      >>> from jcausal.data import load_iris
      >>> from jcausal.models import MLP, accuracy, functional, train
      >>> data = load_iris()
      >>> model = MLP((4, 8, 3), rngs=nnx.Rngs(0))
      >>> res = train(model, data.X, data.y, key=jax.random.key(0), epochs=100, batch_size=16,
      ...             learning_rate=1e-2, progress=False)
      >>> len(res.history["loss"]), res.history["loss"][-1] < res.history["loss"][0]
      (100, True)
      >>> accuracy(*functional(model), data.X, data.y) > 0.9
      True
    """
    xs, y, val = _checked_data(X, y, X_val, y_val)
    n = y.shape[0]
    loss_fn = LOSSES[loss] if isinstance(loss, str) else loss
    tx = optimizer or optax.adam(learning_rate)
    apply, params = functional(model)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = tx.init(params)
    bs = min(int(batch_size), n)
    nb = n // bs
    step = _make_step(apply, loss_fn, tx)
    evaluate = None if val is None else partial(_validate, apply, loss_fn, loss in ("xent", "bce"), val)
    if epochs < 1:  # nothing to train
        return FitResult(params, {"loss": []}, 0, aux={"model": model})
    res = fit(step, (params, opt_state), (xs, y), key=key, steps=epochs * nb, batch_size=bs,
              loop=Loop(log_every=nb, progress=progress), desc=f"train {type(model).__name__}",
              average=True, evaluate=evaluate)
    if res.nonfinite_step is not None:
        raise TrainingDiverged(f"training loss became non-finite at step {res.nonfinite_step} (epoch "
                                 f"{(res.nonfinite_step - 1) // nb + 1}); lower the learning rate")
    nnx.update(model, res.state[0])
    history = {k: v for k, v in res.history.items() if k != "step"}  # one value per epoch
    return res._replace(state=res.state[0], history=history, aux={"model": model})


def _checked_data(X, y, X_val, y_val):
    """Training (and validation) arrays on the device, refused when empty, mismatched or NaN/inf."""
    xs = tuple(jnp.asarray(a) for a in _as_tuple(X))
    y = jnp.asarray(y)
    n = y.shape[0]
    if n == 0 or any(a.shape[0] != n for a in xs):
        raise ValueError(f"X and y need the same non-zero length, got {[a.shape[0] for a in xs]} and {n}")
    _check_finite("training data X", xs)
    _check_finite("training targets y", (y,))
    if X_val is None:
        return xs, y, None
    _check_finite("validation data X_val", _as_tuple(X_val))
    return xs, y, (tuple(jnp.asarray(a) for a in _as_tuple(X_val)), jnp.asarray(y_val))  # on device once


def _make_step(apply, loss_fn, tx):
    """The jitted update on a batch ``idx`` of ``data = (inputs, targets)``, per-example dropout keys."""

    def batch_loss(params, xb, yb, keys):
        out = jax.vmap(lambda *a: apply(params, *a[:-1], key=a[-1]))(*xb, keys)
        return jnp.mean(jax.vmap(loss_fn)(out, yb))

    @jit
    def step(state, data, idx, key):
        params, opt_state = state
        xs, y = data
        xb = tuple(a[idx] for a in xs)
        val, grads = jax.value_and_grad(batch_loss)(params, xb, y[idx], jax.random.split(key, idx.shape[0]))
        with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
            updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": val}

    return step


def _validate(apply, loss_fn, classify: bool, val, state) -> dict[str, float]:
    """Validation accuracy (classification losses) or loss of the state's parameters."""
    X_val, y_val = val
    if classify:
        return {"val_accuracy": accuracy(apply, state[0], X_val, y_val)}
    out = predict(apply, state[0], X_val)
    return {"val_loss": float(jnp.mean(jax.vmap(loss_fn)(out, y_val)))}
