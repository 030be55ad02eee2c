"""Batch ACE jobs that survive being killed and scale out (the user's own model, any size).

A job computes Phase I for ``F`` features in chunks of ``chunk_features`` features (every alpha of
a feature stays in one chunk: eqn 2 reuses the same rows for all of them). Each finished chunk is
written atomically to ``<out>/chunks/chunk_NNNNN.npz`` (unique temporary file, fsync, rename) and
recorded in ``<out>/manifest.json``; the chunk file, not the manifest, is the proof of completion,
so a SIGKILL at any moment loses at most the chunk in flight. Each chunk proves itself: it records
its job id, its position and its features beside a SHA-256 of its arrays, all verified whenever it
is read; a chunk edited by hand or swapped with another chunk's file is refused, naming the file,
and never used. Running the same job again continues
from the finished chunks, computes nothing twice, and gives a result bit-identical to an
uninterrupted run (each chunk is the same deterministic program either way). A folder holding
another job's manifest, or a result without a manifest, is refused unless ``overwrite=True``.

Replacing another job (``overwrite=True``) is kill-safe too: its files are removed in the order
that keeps what is left loadable as *its* result or as nothing (the manifest that marks the job
complete, then ``ace.json``, then ``ace.npz``, then its chunks), and only then is the new manifest
written. After a SIGKILL at any moment the folder holds the old job's result or the new job's
resumable state, never the old ``ace.npz`` beside the new manifest. Temporary files of killed
writers are removed when the next job starts.

Scale-out: each call shards its points over every local device (``devices=``); with
``distributed=True`` (after ``jax.distributed.initialize``) process ``p`` of ``P`` takes chunks
``p, p + P, ...`` and process 0 waits for the others' chunk files and writes the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jcausal._src.calling import unwrap_model
from jcausal._src.checks import require_int
from jcausal._src.io import (
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    read_npz_arrays,
    remove_stale_temps,
)
from jcausal.ace.attribution import (
    ACEResult,
    Settings,
    make_settings,
    phase_one,
    phase_two,
    prepare,
    save_result,
)
from jcausal.ace.interventional import Execution

__all__ = ["JobError", "job_status", "load_model", "load_rows", "run_job"]

MANIFEST = "manifest.json"
CHUNKS = "chunks"
RESULT = ("ace.json", "ace.npz")  # written ace.npz first; removed in this order (ace.json marks it done)
_CHUNK_NAME = re.compile(r"^chunk_[0-9]{5}\.npz$")


class JobError(RuntimeError):
    """A chunk of a job failed; the finished chunks are kept (the message names the chunk)."""


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, (bytes, bytearray)):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _tree_digest(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def job_status(out: str | os.PathLike) -> dict | None:
    """The manifest of the job in ``out`` (``None`` if there is none), with ``done`` the indices of
    the chunks whose files are present and readable."""
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        manifest["done"] = sorted(_finished(out, manifest))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest


def _results_present(out: Path) -> list[str]:
    return [n for n in RESULT if os.path.lexists(out / n)]


def _discard(out: Path) -> None:
    """Remove another job's files, each step leaving a folder that loads as its result or as none:
    the manifest (it marks the job complete), ``ace.json``, ``ace.npz`` (a symlink is removed, not
    followed), the chunks; then sync the folder, so the removals precede the new manifest."""
    for name in (MANIFEST, *RESULT):
        try:
            os.unlink(out / name)
        except FileNotFoundError:
            pass
    if (out / CHUNKS).is_dir():
        shutil.rmtree(out / CHUNKS, ignore_errors=True)  # stale chunks carry their job id anyway
    fsync_dir(out)


def _remove_temps(out: Path, chunks: bool) -> None:
    """Temporary files of killed writers of the job's files (see :func:`remove_stale_temps`; none
    of this process's writes is in flight when a job starts)."""
    remove_stale_temps(out, lambda n: n in (MANIFEST, *RESULT), own=True)
    if chunks:
        remove_stale_temps(out / CHUNKS, _CHUNK_NAME.match, own=True)


def _chunk_path(out: Path, c: int) -> Path:
    return out / CHUNKS / f"chunk_{c:05d}.npz"


def _chunk_checksum(arrays: dict) -> str:
    """SHA-256 of a chunk's arrays and of what it is (job id, position, features, method)."""
    h = hashlib.sha256()
    for name in ("job", "position", "features", "method", "expectations", "stderr"):
        if name in arrays:
            a = np.ascontiguousarray(np.asarray(arrays[name]))
            h.update(f"{name}:{a.dtype.str}:{a.shape}:".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _read_chunk(out: Path, manifest: dict, c: int) -> dict | None:
    """Chunk ``c``'s arrays when its file holds this job's chunk ``c``; ``None`` when it is absent,
    unreadable or another job's (it is computed again).

    Raises:
      JobError: the file claims this job but is not its chunk ``c`` (its checksum does not match its
        arrays, or it holds another position or other features: edited, or swapped with another
        chunk's file); it is never used.
    """
    p = _chunk_path(out, c)
    if p.exists() and not p.is_file():
        raise JobError(f"{p} is a folder where the job writes its chunk {c}: move it away")
    if not p.is_file():
        return None
    try:
        z = read_npz_arrays(p, required=("job", "expectations"))
    except (ValueError, FileNotFoundError):
        return None  # unreadable (or removed since: another job's, discarded): recompute it
    if str(z["job"]) != manifest["job"]:
        return None
    cf = int(manifest["chunk_features"])
    feats = np.asarray(manifest["features"])[c * cf:(c + 1) * cf]
    problems = []
    if "checksum" not in z or str(z["checksum"]) != _chunk_checksum(z):
        problems.append("its checksum does not match its arrays (edited by hand, or damaged)")
    position = int(z.get("position", -1))
    if position != c:
        problems.append(f"it is chunk {position} of the job, not chunk {c} (a swapped file)")
    if "features" not in z or not np.array_equal(np.asarray(z["features"]), feats):
        problems.append(f"it holds features {np.asarray(z.get('features', [])).tolist()}, not this chunk's "
                        f"{feats.tolist()}")
    if problems:
        raise JobError(f"{p} is not chunk {c} of this job: {'; '.join(problems)}. It is never used: delete "
                       "it, and the same command computes that chunk again")
    return z


def _finished(out: Path, manifest: dict) -> set[int]:
    return {c for c in range(int(manifest["num_chunks"])) if _read_chunk(out, manifest, c) is not None}


def run_job(
    f: Callable,
    X,
    out: str | os.PathLike,
    *,
    params: Any = None,
    chunk_features: int = 8,
    overwrite: bool = False,
    progress: bool = True,
    distributed: bool = False,
    wait_timeout: float = 3600.0,
    record: dict | None = None,
    settings: Settings | None = None,
    **options,
) -> ACEResult:
    """Phase I in resumable chunks, then Phase II; writes ``<out>/ace.npz`` and ``<out>/ace.json``.

    The same pipeline and :class:`jcausal.ace.attribution.Settings` as :func:`jcausal.ace.explain`
    (features, grid, estimator, execution, Phase II order, Bayes factor, reference level, ...).

    Args:
      f, params: the model, as for :func:`jcausal.ace.interventional_expectation` (a
        :class:`jcausal.models.Split` runs the fast eqn 2).
      X: ``(n, k)`` training rows (eqn 2 averages over them; moments for eqn 4).
      out: output folder (created). Holds ``manifest.json``, ``chunks/``, ``ace.npz``, ``ace.json``.
        Run it under ``jcausal._src.io.output_lock`` when other processes may write there (the
        CLI does).
      chunk_features: features per chunk (the unit of work saved to disk).
      overwrite: discard another job's files in ``out`` (or a result with no manifest) instead of
        refusing; kill-safe (see the module docstring).
      progress: tqdm bar with chunks done, points per second and time left.
      distributed: this process takes chunks ``process_index::process_count`` (after
        ``jax.distributed.initialize``) on its local devices; process 0 writes the result.
      wait_timeout: seconds process 0 waits for the other processes' chunks.
      record: what the manifest records about the run: ``model`` (e.g. the ``module:function`` it
        came from; part of the job's identity) and ``outputs`` (``"probabilities"`` or ``"raw"``).
      settings: a :class:`jcausal.ace.attribution.Settings` (default ``Settings()``).
      **options: :class:`jcausal.ace.attribution.Settings` fields replaced (``num_alphas``,
        ``max_order``, ``method``, ``run``, ``reference_at``, ...).

    Returns:
      the :class:`jcausal.ace.ACEResult` (identical whether or not the job was interrupted).

    Raises:
      FileExistsError: ``out`` holds another job, or a result without a manifest (pass
        ``overwrite=True``).
      JobError: a chunk's computation failed (finished chunks are kept).

    Examples:
      >>> import os, tempfile, jax.numpy as jnp, numpy as np
      >>> from jcausal.ace.jobs import job_status, run_job
      >>> X = np.random.default_rng(0).uniform(size=(40, 3)).astype(np.float32)
      >>> out = tempfile.mkdtemp()
      >>> res = run_job(lambda w, x: jnp.tanh(w * x), X, out, params=jnp.ones(3), num_alphas=5,
      ...               max_order=2, chunk_features=2, progress=False)
      >>> res.expectations.shape, sorted(os.listdir(os.path.join(out, "chunks")))
      ((3, 5, 3), ['chunk_00000.npz', 'chunk_00001.npz'])
      >>> job_status(out)["complete"]
      True
    """
    s = make_settings(settings, **options)
    out, X = _check_job(out, X, chunk_features)
    f, params = unwrap_model(f, params)  # a jcausal.wrap model: its Split (or apply) and params
    grid = prepare(X, s, None)
    if grid.alphas.shape[1] < s.max_order + 2:
        raise ValueError(f"{grid.alphas.shape[1]} alphas are too few for max_order={s.max_order} (need >= "
                         f"{s.max_order + 2})")
    record = {"model": "", "outputs": None, **(record or {})}
    described = _describe(dataclasses.replace(s, data=None))
    identity = {  # what makes the job itself: recorded, so that another job is refused naming the difference
        "model": record["model"], "settings": described, "features": grid.features.tolist(),
        "alphas": hashlib.sha256(grid.alphas.tobytes()).hexdigest(), "rows": list(X.shape),
        "dtype": str(X.dtype), "parameters": _tree_digest(params),
        "data": hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest(), "subsample": _describe(s.data),
        "chunk_features": chunk_features, "max_order": s.max_order}
    job = _digest(identity)
    num_chunks = -(-grid.features.size // chunk_features)
    pid, nproc = (jax.process_index(), jax.process_count()) if distributed else (0, 1)
    _claim(out, job, identity, num_chunks, overwrite, pid, distributed)
    manifest = {"job": job, "identity": identity, "model": record["model"], "outputs": record["outputs"],
                "num_chunks": num_chunks,
                "chunk_features": chunk_features, "features": grid.features.tolist(),
                "num_alphas": int(grid.alphas.shape[1]), "settings": described, "processes": nproc}
    if pid == 0:
        atomic_write_json(out / MANIFEST, {**manifest, "done": sorted(_finished(out, manifest))})
    if distributed and s.run is None:
        s = dataclasses.replace(s, run=Execution(devices=jax.local_devices()))
    elif distributed and s.run.devices is None and s.run.mesh is None:
        s = dataclasses.replace(s, run=dataclasses.replace(s.run, devices=jax.local_devices()))
    t0 = time.perf_counter()
    mine = [c for c in range(num_chunks) if c % nproc == pid]
    computed = _compute_chunks(f, params, grid, s, out, manifest, mine, progress)
    if pid != 0:
        return None
    parts = _collect(out, manifest, wait_timeout)
    E = np.concatenate([p["expectations"] for p in parts])
    se = np.concatenate([p["stderr"] for p in parts]) if all("stderr" in p for p in parts) else None
    res = phase_two(grid, E, se, s)
    save_result(out / "ace.npz", res)
    meta = {**manifest, "done": list(range(num_chunks)), "computed_this_run": computed,
            "method": str(parts[0]["method"]), "devices": [str(d) for d in jax.devices()],
            "versions": {"jax": jax.__version__}, "seconds_this_run": time.perf_counter() - t0}
    atomic_write_json(out / "ace.json", meta)
    atomic_write_json(out / MANIFEST, {**manifest, "done": list(range(num_chunks)), "complete": True})
    return res


def _check_job(out, X, chunk_features) -> tuple[Path, np.ndarray]:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} exists and is not a folder")
    if (out / CHUNKS).exists() and not (out / CHUNKS).is_dir():
        raise NotADirectoryError(f"{out / CHUNKS} is a file; a job keeps its chunks in a folder of that "
                                 "name: move the file away, or choose another output folder")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be (n, k), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN/inf")
    require_int(chunk_features, "chunk_features")
    return out, X


def _describe(v):
    """A JSON description of a setting that changes the result: arrays by digest, PRNG keys by their
    data, estimator and execution objects field by field (devices and mesh left out)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        fields = [f.name for f in dataclasses.fields(v) if f.name not in ("devices", "mesh")]
        return {"type": type(v).__name__, **{n: _describe(getattr(v, n)) for n in fields}}
    if isinstance(v, jax.Array) and jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(v)).tolist()
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        a = np.ascontiguousarray(np.asarray(v))
        return {"shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    if isinstance(v, dict):
        return {str(k): _describe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_describe(x) for x in v]
    return getattr(v, "__qualname__", repr(type(v)))


def _differences(old: dict, new: dict) -> str:
    """What differs between two jobs' identities (named; values shown when short)."""
    names = {"dtype": "dtype (--x64)", "parameters": "model parameters", "data": "data rows",
             "subsample": "row subsample"}
    parts = []
    for k in new:
        if old.get(k) != new[k]:
            a, b = old.get(k, "not recorded"), new[k]
            short = all(isinstance(v, (str, int, float)) and len(str(v)) <= 24 for v in (a, b))
            parts.append(f"{names.get(k, k)}{f' ({a} there, {b} now)' if short else ''}")
    return ", ".join(parts) or "its recorded identity"


def _claim(out: Path, job: str, identity: dict, num_chunks: int, overwrite: bool, pid: int,
           distributed: bool) -> None:
    """Refuse (or, with ``overwrite``, discard) another job's files in ``out``, naming what differs;
    clean stale temps."""
    old = job_status(out)
    stray = _results_present(out) if old is None else []
    if (old is not None and old["job"] != job) or stray:
        if not overwrite:
            what = (f"another job ({old.get('model', '?')}, {old['num_chunks']} chunks, {len(old['done'])} "
                    f"done; it differs in {_differences(old.get('identity', {}), identity)})"
                    if old is not None else
                    f"a result ({', '.join(stray)}) with no job manifest, perhaps another job's")
            raise FileExistsError(f"{out} holds {what}; pass overwrite=True (--overwrite) or choose "
                                  "another folder")
        if pid == 0:
            _discard(out)  # before the new manifest: never the old result beside the new job
    if pid == 0:
        _remove_temps(out, chunks=not distributed)
    (out / CHUNKS).mkdir(parents=True, exist_ok=True)


def _compute_chunks(f, params, grid, s, out, manifest, mine, progress) -> list[int]:
    """Phase I for this process's unfinished chunks, each written atomically; the chunks computed."""
    from tqdm.auto import tqdm

    job, cf = manifest["job"], manifest["chunk_features"]
    done = _finished(out, manifest)
    todo = [c for c in mine if c not in done]
    A = grid.alphas.shape[1]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="ACE chunks", unit="chunk",
               disable=not progress)
    computed, t0 = [], time.perf_counter()
    for c in todo:
        sl = slice(c * cf, min((c + 1) * cf, grid.features.size))
        try:
            E, info = phase_one(f, grid, s, params=params, chunk=sl)
        except Exception as err:
            bar.close()
            raise JobError(f"chunk {c} (features {grid.features[sl].tolist()}) failed: {type(err).__name__}: "
                           f"{err}; {len(done) + len(computed)} finished chunks are kept in {out / CHUNKS}") \
                from err
        arrays = {"job": np.asarray(job), "position": np.asarray(c, np.int32), "expectations": np.asarray(E),
                  "features": grid.features[sl].astype(np.int32), "method": np.asarray(info.method)}
        if info.stderr is not None:
            arrays["stderr"] = np.asarray(info.stderr)
        arrays["checksum"] = np.asarray(_chunk_checksum(arrays))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(_chunk_path(out, c), buf.getvalue())
        computed.append(c)
        if manifest["processes"] == 1 or jax.process_index() == 0:
            atomic_write_json(out / MANIFEST, {**manifest, "done": sorted(done | set(computed))})
        el = time.perf_counter() - t0
        bar.update()
        bar.set_postfix(points_per_s=f"{len(computed) * cf * A / max(el, 1e-9):.1f}")
    bar.close()
    return computed


def _collect(out: Path, manifest: dict, wait_timeout: float) -> list[dict]:
    """Every chunk's arrays (each verified), waiting up to ``wait_timeout`` s for the other
    processes' chunks."""
    num_chunks = int(manifest["num_chunks"])
    deadline = time.monotonic() + wait_timeout
    while True:
        parts = [_read_chunk(out, manifest, c) for c in range(num_chunks)]
        missing = [c for c, z in enumerate(parts) if z is None]
        if not missing:
            return parts
        if time.monotonic() > deadline:
            raise JobError(f"timed out waiting for chunks {missing[:10]} from the other processes")
        time.sleep(0.5)


def load_model(spec: str, example, checkpoint: str | os.PathLike | None = None):
    """The user's model, imported and wrapped through the one contract (:func:`jcausal.wrap`).

    ``spec`` names a ``module:function`` to call: it must return ``(model, params)`` with ``model``
    a callable ``model(params, x)`` on ONE input (``model(x)`` when ``params`` is ``None``) or a
    :class:`jcausal.models.Split` (first affine layer + rest: kept as the fast eqn-2 split).

    With ``checkpoint``, ``spec`` names a Flax NNX module class instead (``module:Class``): it is
    built from the configuration the checkpoint recorded (:func:`jcausal.models.save`), the
    parameters are loaded, and it is wrapped with ``head=jax.nn.softmax`` (class probabilities, as
    ``jcausal ace file`` computes for the same checkpoint; ``wrap`` finds its eqn-2 split).

    Args:
      spec: ``"package.module:function"`` (or ``"package.module:Class"`` with ``checkpoint``).
      example: ONE input ``(k,)``. The model's floating parameters take its dtype (float64 under
        ``jax.enable_x64`` for a float64 example, as ``jcausal ace run --x64`` does).
      checkpoint: a checkpoint written by :func:`jcausal.models.save`.

    Returns:
      :class:`jcausal.Wrapped` (its ``output`` says whether the model gives probabilities).

    Raises:
      ValueError: the reason, naming ``spec``: not importable, not callable, a wrong return value,
        an error raised by the user's function, a checkpoint of another model, or an example the
        model rejects.

    Examples:
      >>> from jcausal.ace.jobs import load_model
      >>> load_model("no_colon", [0.0, 1.0])
      Traceback (most recent call last):
      ValueError: --model must look like 'package.module:function', got 'no_colon'
    """
    from jcausal._src.wrap import wrap

    example = np.asarray(example)
    dtype = example.dtype if np.issubdtype(example.dtype, np.floating) else np.dtype(np.float32)
    if checkpoint is not None:
        module = _from_checkpoint(spec, checkpoint, dtype)
        model, params, head = module, None, jax.nn.softmax
    else:
        model, params = _from_factory(spec)
        params = _cast_floats(params, dtype)
        head = None
    try:
        return wrap(model, example, params=params, head=head)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--model {spec} on one row of the data (shape {example.shape}): "
                         f"{' '.join(str(err).split())[:400]}") from None


def _cast_floats(tree, dtype):
    """``tree`` with its floating arrays as ``dtype`` (other leaves unchanged)."""
    def cast(a):
        arr = np.asarray(a)
        return arr.astype(dtype) if np.issubdtype(arr.dtype, np.floating) else a

    return None if tree is None else jax.tree.map(cast, tree)


def _from_factory(spec: str):
    """``(model, params)`` from the user's ``module:function``."""
    import importlib

    from jcausal._src.calling import Split

    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"--model must look like 'package.module:function', got {spec!r}")
    mod_name, fn_name = spec.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as err:  # ImportError, or an error raised while importing the user's module
        why = f"{type(err).__name__}: {err}"
        raise ValueError(f"cannot import module {mod_name!r} for --model {spec}: {why}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ValueError(f"module {mod_name!r} has no callable {fn_name!r} (--model {spec})")
    try:
        got = fn()
    except Exception as err:
        raise ValueError(f"{spec}() raised {type(err).__name__}: {err}") from None
    if not (isinstance(got, tuple) and len(got) == 2):
        raise ValueError(f"{spec}() must return (model, params), got {type(got).__name__}")
    model, params = got
    if not (callable(model) or isinstance(model, Split)):
        raise ValueError(f"{spec}() returned a model that is not callable: {type(model).__name__}")
    return model, params


def _from_checkpoint(spec: str, checkpoint, dtype):
    """The NNX module ``spec`` names, rebuilt from ``checkpoint``, its parameters as ``dtype``."""
    import importlib
    import inspect

    from flax import nnx

    from jcausal.models import load
    from jcausal.models.checkpoint import CheckpointMismatchError, read_metadata

    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"--model must look like 'package.module:Class', got {spec!r}")
    mod_name, cls_name = spec.split(":")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {spec}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, nnx.Module)):
        raise ValueError(f"{spec} is not a Flax NNX Module class (needed with --checkpoint)")
    try:
        meta = read_metadata(checkpoint)
    except (FileNotFoundError, CheckpointMismatchError, ValueError) as err:
        raise ValueError(str(err)) from None
    if meta.get("model") not in (None, cls.__name__):
        raise ValueError(f"{checkpoint} holds a {meta['model']}, not a {cls.__name__}")
    params_ok = set(inspect.signature(cls.__init__).parameters) - {"self", "rngs"}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta.items() if k in params_ok}
    try:
        _check_shapes(cls, kwargs, checkpoint)  # the record is untrusted: nothing built from it yet
        module = cls(**kwargs, rngs=nnx.Rngs(0))
        load(checkpoint, module)
    except (TypeError, CheckpointMismatchError) as err:
        raise ValueError(f"cannot rebuild {spec} from {checkpoint} (recorded {kwargs}): {err}") from None
    nnx.update(module, jax.tree.map(lambda a: jax.numpy.asarray(a, dtype), nnx.state(module, nnx.Param)))
    return module


def _check_shapes(cls, kwargs: dict, checkpoint) -> None:
    """Compare the shapes the recorded configuration implies (an abstract module: no array of the
    recorded size is allocated) with the checkpoint's state; raise ``CheckpointMismatchError`` on
    a difference. A class that cannot be built abstractly is checked when it is built."""
    from flax import nnx

    from jcausal.models import load

    try:
        abstract = nnx.eval_shape(lambda: cls(**kwargs, rngs=nnx.Rngs(0)))
    except TypeError:
        raise
    except Exception:  # noqa: BLE001 -- an __init__ that needs concrete values
        return
    load(checkpoint, nnx.state(abstract))


def load_rows(path: str | os.PathLike) -> np.ndarray:
    """Training rows ``(n, k)`` float32 from a ``.npy`` file, a ``.npz`` archive (its only array, or
    the one named ``X``), or an IDX folder/file (images flattened, scaled to [0, 1]).

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from jcausal.ace.jobs import load_rows
      >>> path = os.path.join(tempfile.mkdtemp(), "X.npy")
      >>> np.save(path, np.arange(6).reshape(3, 2))
      >>> load_rows(path).dtype, load_rows(path).shape
      (dtype('float32'), (3, 2))
    """
    path = Path(path)
    if path.is_dir() or path.name.endswith(("-ubyte", "-ubyte.gz")):
        from jcausal.data.idx import read_idx

        folder = path if path.is_dir() else path.parent
        cands = sorted(folder.glob("*images-idx3-ubyte*")) if path.is_dir() else [path]
        if not cands:
            raise ValueError(f"no '*images-idx3-ubyte[.gz]' file in {folder}")
        arr = np.asarray(read_idx(cands[0]))
        arr = arr.reshape(arr.shape[0], -1).astype(np.float32)
        if arr.max() > 1.0:
            arr = arr / 255.0
        return arr
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path}: not a plain numeric .npy array ({err})") from None
    elif path.suffix == ".npz":
        z = read_npz_arrays(path)
        if "X" in z:
            arr = z["X"]
        elif len(z) == 1:
            arr = next(iter(z.values()))
        else:
            raise ValueError(f"{path} holds several arrays {sorted(z)}: name the rows 'X'")
    else:
        raise ValueError(f"{path}: use a .npy file, a .npz archive or an IDX folder")
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"{path}: the rows must form a 2-d array (n >= 2, k), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool or np.iscomplexobj(arr):
        raise ValueError(f"{path}: the rows must be real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float32)
