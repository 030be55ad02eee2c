"""Safe, atomic parameter checkpoints: msgpack via flax.serialization (no pickle, no code).

A checkpoint holds the module's state and a JSON metadata record: the model class, its plain
configuration attributes (e.g. an MLP's ``sizes`` and ``activation``) and whatever the caller adds
(``seed``, ``dataset``, ...). :func:`load` refuses a model whose configuration differs from the
recorded one even when every shape matches (a ReLU checkpoint evaluated with tanh), and
:func:`metadata_differences` compares a record with what a caller asks for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx, serialization

from jcausal._src.io import atomic_write_bytes

__all__ = [
    "CheckpointMismatchError",
    "atomic_write_bytes",
    "describe_model",
    "load",
    "metadata_differences",
    "read_metadata",
    "save",
]

_HEADER = "__jcausal_checkpoint__"  # {"format": 1, "metadata": "<json>"}; the state is under "state"
_FORMAT = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameter names, shapes, dtypes or recorded configuration do not match the
    model's."""


def _plain(v) -> bool:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return True
    return isinstance(v, (tuple, list)) and all(_plain(x) for x in v)


def _json(v):
    """JSON-normalised value (tuples -> lists), for comparisons with a loaded record."""
    return json.loads(json.dumps(v))


def describe_model(model) -> dict:
    """The record :func:`save` keeps about a module: ``{"model": class name, **config}`` where the
    config is every public attribute of plain type (str, number, bool, None, tuples of those),
    e.g. ``{"model": "MLP", "sizes": [4, 8, 3], "activation": "relu"}``. ``{}`` for a bare state."""
    if not isinstance(model, nnx.Module):
        return {}
    cfg = {k: v for k, v in vars(model).items() if not k.startswith("_") and _plain(v)}
    return _json({"model": type(model).__name__, **cfg})


def metadata_differences(recorded: dict, wanted: dict) -> list[str]:
    """Human-readable differences between a checkpoint's record and the values ``wanted``
    (``[]`` when all agree); a wanted key the record lacks is reported as not recorded."""
    out = []
    for k, v in wanted.items():
        if k not in recorded:
            out.append(f"{k}: not recorded, requested {_json(v)!r}")
        elif recorded[k] != _json(v):
            out.append(f"{k}: checkpoint {recorded[k]!r}, requested {_json(v)!r}")
    return out


def _state(obj):
    return nnx.state(obj) if isinstance(obj, nnx.Module) else obj


def _flat(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): (
            (tuple(v.shape), str(np.dtype(v.dtype))) if isinstance(v, jax.ShapeDtypeStruct)  # abstract
            else (tuple(np.shape(v)), str(np.asarray(v).dtype)))
        for path, v in leaves
    }


def save(path: str | os.PathLike, model, *, metadata: dict | None = None) -> None:
    """Save an NNX module's state (or an ``nnx.State`` / pytree of arrays) to ``path``, atomically.

    Args:
      path: the checkpoint file (written through :func:`jcausal._src.io.atomic_write_bytes`:
        a crash leaves the old file or the new one; permissions as a normal write).
      model: an NNX module (its class and plain configuration are recorded, see
        :func:`describe_model`), an ``nnx.State`` or a pytree of arrays.
      metadata: extra JSON-serialisable facts to record, e.g. ``{"seed": 0, "dataset": "iris"}``.

    Raises:
      TypeError: ``metadata`` is not JSON-serialisable.
      ValueError: ``metadata`` contradicts the model's own configuration.

    Examples:
      >>> import os, tempfile, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jcausal.models import MLP, load, save
      >>> path = os.path.join(tempfile.mkdtemp(), "mlp.msgpack")
      >>> save(path, MLP((4, 8, 3), rngs=nnx.Rngs(0)), metadata={"seed": 0})
      >>> fresh = load(path, MLP((4, 8, 3), rngs=nnx.Rngs(1)))        # same class and configuration
      >>> bool(jnp.allclose(fresh(jnp.ones(4)), MLP((4, 8, 3), rngs=nnx.Rngs(0))(jnp.ones(4))))
      True
    """
    record = describe_model(model)
    extra = dict(metadata or {})
    try:
        extra = _json(extra)
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpoint metadata must be JSON-serialisable: {err}") from None
    clash = [k for k in extra if k in record and extra[k] != record[k]]
    if clash:
        raise ValueError(f"metadata {({k: extra[k] for k in clash})} contradicts the model's "
                         f"configuration {({k: record[k] for k in clash})}")
    record.update(extra)
    pure = _state(model)
    pure = nnx.to_pure_dict(pure) if isinstance(pure, nnx.State) else pure
    pure = jax.tree.map(np.asarray, pure)
    blob = {_HEADER: {"format": _FORMAT, "metadata": json.dumps(record)}, "state": _stringify(pure)}
    atomic_write_bytes(path, serialization.msgpack_serialize(blob))


def _read(path: Path) -> tuple[dict, dict]:
    """``(state, metadata)`` of a checkpoint file (either format)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:
        raise CheckpointMismatchError(f"{path}: not a jcausal checkpoint ({err})") from err
    if not isinstance(raw, dict):
        raise CheckpointMismatchError(f"{path}: not a jcausal checkpoint (no state dictionary)")
    if _HEADER not in raw:  # the first format: the bare state, no record
        return raw, {}
    head = raw[_HEADER]
    try:
        fmt, meta = int(head["format"]), json.loads(head["metadata"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointMismatchError(f"{path}: unreadable checkpoint header ({err})") from None
    if fmt > _FORMAT:
        raise CheckpointMismatchError(f"{path}: checkpoint format {fmt} is newer than this jcausal "
                                      f"reads ({_FORMAT}); upgrade jcausal")
    return raw.get("state", {}), meta


def read_metadata(path: str | os.PathLike) -> dict:
    """The record saved with a checkpoint (``{}`` for a checkpoint of the first format)."""
    return _read(Path(path))[1]


def _stringify(tree):
    if isinstance(tree, dict):
        return {str(k): _stringify(v) for k, v in tree.items()}
    return tree


def load(path: str | os.PathLike, model):
    """Load a checkpoint into ``model`` (an NNX module, updated in place and returned) or into the
    structure of an ``nnx.State`` (a new state is returned).

    Raises:
      FileNotFoundError: no such file.
      CheckpointMismatchError: the recorded configuration (class, e.g. an MLP's ``activation``)
        differs from the module's, or names, shapes or dtypes differ from the model's (the message
        lists the first differences); the model is left untouched.
    """
    path = Path(path)
    raw, meta = _read(path)
    mine = describe_model(model)
    if meta and mine:
        differ = [f"{k}: checkpoint {meta[k]!r}, model {v!r}" for k, v in mine.items()
                  if k in meta and meta[k] != v]
        if differ:
            raise CheckpointMismatchError(f"{path} does not match the model's configuration: "
                                          + "; ".join(differ))
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
