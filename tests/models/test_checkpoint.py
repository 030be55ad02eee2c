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
