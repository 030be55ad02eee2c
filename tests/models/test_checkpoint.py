import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.models import (
    GCECNN,
    MLP,
    CheckpointMismatchError,
    SequenceClassifier,
    functional,
    load,
    save,
)


@pytest.mark.parametrize("make,x", [
    (lambda s: MLP((4, 8, 3), rngs=nnx.Rngs(s)), jnp.ones(4)),
    (lambda s: GCECNN(2, rngs=nnx.Rngs(s)), jnp.ones((28, 28))),
    (lambda s: SequenceClassifier(1, 4, 2, cell="lstm", rngs=nnx.Rngs(s)), jnp.ones((7, 1))),
])
def test_save_load_identical_outputs(tmp_path, make, x):
    a = make(0)
    save(tmp_path / "m.msgpack", a)
    b = make(1)
    fa, pa = functional(a)
    fb, pb = functional(b)
    assert not np.array_equal(fa(pa, x), fb(pb, x))
    load(tmp_path / "m.msgpack", b)
    fb, pb = functional(b)
    np.testing.assert_array_equal(fa(pa, x), fb(pb, x))
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary behind


def test_mismatch_rejected_and_model_untouched(tmp_path):
    save(tmp_path / "m.msgpack", MLP((4, 8, 3), rngs=nnx.Rngs(0)))
    other = MLP((4, 9, 3), rngs=nnx.Rngs(1))
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(other)))
    with pytest.raises(CheckpointMismatchError, match="does not match"):
        load(tmp_path / "m.msgpack", other)
    after = nnx.to_pure_dict(nnx.state(other))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    with pytest.raises(CheckpointMismatchError):
        load(tmp_path / "m.msgpack", MLP((4, 8, 8, 3), rngs=nnx.Rngs(1)))


def test_garbage_and_missing(tmp_path):
    (tmp_path / "bad").write_bytes(b"not msgpack at all \xff\x00")
    with pytest.raises(CheckpointMismatchError):
        load(tmp_path / "bad", MLP((4, 3), rngs=nnx.Rngs(0)))
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "none", MLP((4, 3), rngs=nnx.Rngs(0)))


# ------------------------------------------------------- issue 15 items 1 and 7: metadata, modes


def test_activation_mismatch_is_refused(tmp_path):
    """Same shapes, other activation: loading must not silently evaluate a ReLU model with tanh."""
    save(tmp_path / "m.msgpack", MLP((4, 8, 3), activation="relu", rngs=nnx.Rngs(0)))
    other = MLP((4, 8, 3), activation="tanh", rngs=nnx.Rngs(1))
    with pytest.raises(CheckpointMismatchError, match="activation: checkpoint 'relu', model 'tanh'"):
        load(tmp_path / "m.msgpack", other)
    seq = SequenceClassifier(1, 4, 2, cell="lstm", rngs=nnx.Rngs(0))
    save(tmp_path / "s.msgpack", seq)
    with pytest.raises(CheckpointMismatchError, match="reverse"):
        load(tmp_path / "s.msgpack", SequenceClassifier(1, 4, 2, cell="lstm", reverse=True,
                                                        rngs=nnx.Rngs(0)))


def test_metadata_round_trip_and_differences(tmp_path):
    from jcausal.models.checkpoint import metadata_differences, read_metadata

    save(tmp_path / "m.msgpack", MLP((4, 8, 3), rngs=nnx.Rngs(0)), metadata={"seed": 5, "lr": 0.01})
    meta = read_metadata(tmp_path / "m.msgpack")
    assert meta == {"model": "MLP", "sizes": [4, 8, 3], "activation": "relu", "seed": 5, "lr": 0.01}
    assert metadata_differences(meta, {"sizes": (4, 8, 3), "seed": 5}) == []
    diff = metadata_differences(meta, {"activation": "tanh", "seed": 0, "epochs": 3})
    assert diff == ["activation: checkpoint 'relu', requested 'tanh'",
                    "seed: checkpoint 5, requested 0", "epochs: not recorded, requested 3"]
    with pytest.raises(ValueError, match="activation"):  # metadata cannot contradict the model
        save(tmp_path / "x.msgpack", MLP((4, 3), rngs=nnx.Rngs(0)), metadata={"activation": "tanh"})
    with pytest.raises(TypeError, match="JSON"):
        save(tmp_path / "x.msgpack", MLP((4, 3), rngs=nnx.Rngs(0)), metadata={"f": object()})


def test_checkpoint_without_metadata_still_loads(tmp_path):
    """A checkpoint of the earlier format (the bare state dict) loads; it records nothing."""
    from flax import serialization

    from jcausal.models.checkpoint import read_metadata

    a = MLP((4, 8, 3), rngs=nnx.Rngs(0))
    pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(a)))
    pure = {"layers": {str(k): v for k, v in pure["layers"].items()}}
    (tmp_path / "old.msgpack").write_bytes(serialization.msgpack_serialize(pure))
    assert read_metadata(tmp_path / "old.msgpack") == {}
    b = load(tmp_path / "old.msgpack", MLP((4, 8, 3), activation="tanh", rngs=nnx.Rngs(1)))
    fa, pa = functional(a)
    fb, pb = functional(b)
    np.testing.assert_array_equal(pa["layers"][0]["kernel"][...], pb["layers"][0]["kernel"][...])


def test_checkpoint_permissions_follow_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        save(tmp_path / "m.msgpack", MLP((4, 3), rngs=nnx.Rngs(0)))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.msgpack").st_mode) == 0o644
