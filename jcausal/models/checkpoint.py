"""Safe, atomic parameter checkpoints: msgpack via flax.serialization (no pickle, no code)."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx, serialization

from jcausal._src.io import atomic_write_bytes

__all__ = ["CheckpointMismatchError", "save", "load", "atomic_write_bytes"]


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameter names, shapes or dtypes do not match the model's."""


def _state(obj):
    return nnx.state(obj) if isinstance(obj, nnx.Module) else obj


def _flat(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): (
            tuple(np.shape(v)), str(np.asarray(v).dtype))
        for path, v in leaves
    }


def save(path: str | os.PathLike, model) -> None:
    """Save an NNX module's state (or an ``nnx.State`` / pytree of arrays) to ``path``."""
    pure = _state(model)
    pure = nnx.to_pure_dict(pure) if isinstance(pure, nnx.State) else pure
    pure = jax.tree.map(np.asarray, pure)
    atomic_write_bytes(path, serialization.msgpack_serialize(_stringify(pure)))


def _stringify(tree):
    if isinstance(tree, dict):
        return {str(k): _stringify(v) for k, v in tree.items()}
    return tree


def load(path: str | os.PathLike, model):
    """Load a checkpoint into ``model`` (an NNX module, updated in place and returned) or into the
    structure of an ``nnx.State`` (a new state is returned).

    Raises:
      FileNotFoundError: no such file.
      CheckpointMismatchError: names, shapes or dtypes differ from the model's (the message lists
        the first differences); the model is left untouched.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:
        raise CheckpointMismatchError(f"{path}: not a jcausal checkpoint ({err})") from err
    state = _state(model)
    want = _flat(_stringify(nnx.to_pure_dict(state)))
    have = _flat(raw)
    if want != have:
        missing = sorted(set(want) - set(have))[:5]
        extra = sorted(set(have) - set(want))[:5]
        differ = [f"{k}: checkpoint {have[k]} vs model {want[k]}"
                  for k in sorted(set(want) & set(have)) if want[k] != have[k]][:5]
        raise CheckpointMismatchError(
            f"{path} does not match the model's structure: missing {missing}, unexpected {extra}, "
            f"shape/dtype differences {differ}"
        )
    nnx.replace_by_pure_dict(state, _restore_keys(nnx.to_pure_dict(state), raw))  # a fresh State object
    if isinstance(model, nnx.Module):
        nnx.update(model, state)
        return model
    return state


def _restore_keys(template, raw):
    """Values of ``raw`` (string keys) placed in the key structure of ``template``."""
    if isinstance(template, dict):
        return {k: _restore_keys(v, raw[str(k)]) for k, v in template.items()}
    return jax.numpy.asarray(raw)
