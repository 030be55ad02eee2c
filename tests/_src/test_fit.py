"""The one fit loop: a new trainer is one step function; the non-finite policy, checkpoints, seeded
batches and history are the loop's, the same for every trainer."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal._src.fit import FitResult, Loop, batch_order, fit
from jcausal.models.checkpoint import load, read_metadata, save

QUIET = Loop(progress=False)


def test_a_new_trainer_is_one_step_function():
    """Linear least squares by full-batch gradient descent: the fitted weights are the closed form."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = (X @ np.float32([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=64)).astype(np.float32)

    @jax.jit
    def step(w, data, idx, key):
        Xb, yb = data["X"][idx], data["y"][idx]
        loss, g = jax.value_and_grad(lambda v: jnp.mean((Xb @ v - yb) ** 2))(w)
        return w - 0.1 * g, {"loss": loss}

    res = fit(step, jnp.zeros(3), {"X": X, "y": y}, key=jax.random.key(0), steps=300, batch_size=64,
              loop=dataclasses.replace(QUIET, log_every=100))
    assert isinstance(res, FitResult) and res.steps == 300 and res.nonfinite_step is None
    ref = np.linalg.lstsq(X.astype(np.float64), y.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(np.asarray(res.state), ref, atol=1e-4)
    assert res.history["step"] == [100, 200, 300] and len(res.history["loss"]) == 3


def _counting_step(bad_from: float):
    """State ``{"w": (3,)}`` filled with the updates applied; the loss is NaN once ``w >= bad_from``."""

    @jax.jit
    def step(state, data, idx, key):
        t = state["w"][0]
        loss = jnp.where(t >= bad_from, jnp.nan, t)
        return {"w": state["w"] + 1.0}, {"loss": loss}

    return step


@pytest.mark.parametrize("k", [1, 2, 5])
def test_nonfinite_loss_stops_and_keeps_the_last_good_state(k, tmp_path):
    """The loss of step k (measured on the state with k - 1 updates) is NaN: training stops at k and
    keeps the last state whose loss was measured finite (the input of step k - 1), checkpointed."""
    ck = tmp_path / "state.msgpack"
    res = fit(_counting_step(k - 1), {"w": jnp.zeros(3)}, jnp.zeros((8, 1)), key=jax.random.key(0), steps=50,
              batch_size=4, loop=dataclasses.replace(QUIET, checkpoint=ck),
              save=lambda p, s, m: save(p, s, metadata=m))
    good = max(k - 2, 0)
    assert res.nonfinite_step == k and res.steps == good
    np.testing.assert_array_equal(np.asarray(res.state["w"]), np.full(3, float(good)))
    loaded = load(ck, nnx.State({"w": jnp.ones(3)}))
    np.testing.assert_array_equal(np.asarray(loaded["w"]), np.full(3, float(good)))
    assert read_metadata(ck)["nonfinite_step"] == k and read_metadata(ck)["step"] == good
    assert res.history["step"] == list(range(1, k))  # every step whose loss was measured finite


def test_checkpoints_are_atomic_periodic_and_final(tmp_path):
    ck = tmp_path / "state.msgpack"
    calls = []

    def write(path, state, meta):
        calls.append(meta["step"])
        save(path, state, metadata=meta)

    res = fit(_counting_step(1e9), {"w": jnp.zeros(3)}, jnp.zeros((8, 1)), key=jax.random.key(0), steps=7,
              batch_size=4, loop=dataclasses.replace(QUIET, checkpoint=ck, checkpoint_every=3), save=write)
    assert calls == [3, 6, 7] and res.checkpoint == ck
    assert os.listdir(tmp_path) == ["state.msgpack"]  # no temporary file left behind
    np.testing.assert_array_equal(np.asarray(load(ck, nnx.State({"w": jnp.ones(3)}))["w"]), np.full(3, 7.0))
    assert read_metadata(ck)["step"] == 7 and read_metadata(ck)["nonfinite_step"] is None
    with pytest.raises(ValueError, match="save"):
        fit(_counting_step(1e9), {"w": jnp.zeros(3)}, jnp.zeros((8, 1)), key=jax.random.key(0), steps=1,
            batch_size=4, loop=dataclasses.replace(QUIET, checkpoint=ck))


@jax.jit
def _recording_step(state, data, idx, key):
    """Records the batch's rows and a draw from the step's key."""
    return state, {"loss": jnp.float32(0.0), "first": idx[0].astype(jnp.float32),
                   "draw": jax.random.uniform(key)}


def test_batches_and_step_keys_are_seeded():
    data = jnp.arange(10.0)[:, None]
    runs = [fit(_recording_step, 0.0, data, key=jax.random.key(s), steps=12, batch_size=3, loop=QUIET)
            for s in (0, 0, 1)]
    assert runs[0].history == runs[1].history  # same key: same batches and step keys
    assert runs[0].history["first"] != runs[2].history["first"]  # another key: another order
    assert runs[0].history["draw"] != runs[2].history["draw"]
    order = np.asarray(batch_order(jax.random.key(0), 0, 10, 3))
    assert order.shape == (3, 3) and len(set(order.ravel().tolist())) == 9  # a permutation, remainder dropped
    assert not np.array_equal(order, np.asarray(batch_order(jax.random.key(0), 1, 10, 3)))  # per epoch


def test_average_history_and_evaluate():
    """``average``: one record per window (e.g. an epoch) holding the metrics' mean; ``evaluate``
    adds its scalars to each record."""
    res = fit(_counting_step(1e9), {"w": jnp.zeros(1)}, jnp.zeros((8, 1)), key=jax.random.key(0), steps=8,
              batch_size=2, loop=dataclasses.replace(QUIET, log_every=4), average=True,
              evaluate=lambda s: {"w": float(s["w"][0])})
    assert res.history == {"step": [4, 8], "loss": [1.5, 5.5], "w": [4.0, 8.0]}


@pytest.mark.parametrize("kw, match", [
    (dict(steps=0), "steps"),
    (dict(batch_size=9), "exceeds the 8 rows"),
])
def test_bad_settings(kw, match):
    args = dict(key=jax.random.key(0), steps=1, batch_size=2, loop=QUIET) | kw
    with pytest.raises(ValueError, match=match):
        fit(_recording_step, 0.0, jnp.zeros((8, 1)), **args)


@pytest.mark.parametrize("kw, match", [(dict(log_every=0), "log_every must be an int >= 1, got 0"),
                                       (dict(checkpoint_every=2.5), "checkpoint_every must be an int"),
                                       (dict(log_every=True), "log_every must be an int")])
def test_bad_loop_is_refused_when_built(kw, match):
    """Options are validated when they are built (STYLE.md 8): no trainer call needed."""
    with pytest.raises(ValueError, match=match):
        Loop(**kw)
