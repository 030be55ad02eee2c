"""Batch ACE jobs that survive being killed and scale out (the user's own model, any size).

A job computes Phase I for ``F`` features in chunks of ``chunk_features`` features (every alpha of
a feature stays in one chunk: eqn 2 reuses the same rows for all of them). Each finished chunk is
written atomically to ``<out>/chunks/chunk_NNNNN.npz`` (unique temporary file, fsync, rename) and
recorded in ``<out>/manifest.json``; the chunk file, not the manifest, is the proof of completion,
so a SIGKILL at any moment loses at most the chunk in flight. Running the same job again continues
from the finished chunks, computes nothing twice, and gives a result bit-identical to an
uninterrupted run (each chunk is the same deterministic program either way). A folder holding
another job's manifest is refused unless ``overwrite=True``.

Scale-out: each call shards its points over every local device (``devices=``); with
``distributed=True`` (after ``jax.distributed.initialize``) process ``p`` of ``P`` takes chunks
``p, p + P, ...`` and process 0 waits for the others' chunk files and writes the result.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.io import atomic_write_bytes, atomic_write_json, read_npz_arrays
from jcausal.ace import regressors as R
from jcausal.ace.attribution import ACEResult, save_result
from jcausal.ace.interventional import interventional_expectation
from jcausal.ace.stats import input_stats, intervention_grid

__all__ = ["JobError", "run_job", "job_status"]

MANIFEST = "manifest.json"
CHUNKS = "chunks"


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
    except (OSError, ValueError):
        return None
    manifest["done"] = sorted(_finished(out, manifest["job"], manifest["num_chunks"]))
    return manifest


def _chunk_path(out: Path, c: int) -> Path:
    return out / CHUNKS / f"chunk_{c:05d}.npz"


def _finished(out: Path, job: str, num_chunks: int) -> set[int]:
    done = set()
    for c in range(num_chunks):
        p = _chunk_path(out, c)
        if not p.is_file():
            continue
        try:
            z = read_npz_arrays(p, required=("job", "expectations"))
        except ValueError:
            continue  # unreadable: recompute it
        if str(z["job"]) == job:
            done.add(c)
    return done


def run_job(
    f: Callable,
    X,
    out: str | os.PathLike,
    *,
    params: Any = None,
    features=None,
    num_alphas: int = 20,
    alphas=None,
    max_order: int = 5,
    chunk_features: int = 8,
    overwrite: bool = False,
    progress: bool = True,
    distributed: bool = False,
    model_name: str = "",
    wait_timeout: float = 3600.0,
    **phase1,
) -> ACEResult:
    """Phase I in resumable chunks, then Phase II; writes ``<out>/ace.npz`` and ``<out>/ace.json``.

    Args:
      f, params: the model, as for :func:`jcausal.ace.interventional_expectation` (a
        :class:`jcausal.models.Split` runs the fast eqn 2).
      X: ``(n, k)`` training rows (eqn 2 averages over them; moments for eqn 4).
      out: output folder (created). Holds ``manifest.json``, ``chunks/``, ``ace.npz``, ``ace.json``.
      features, num_alphas, alphas, max_order: as for :func:`jcausal.ace.explain`.
      chunk_features: features per chunk (the unit of work saved to disk).
      overwrite: discard another job's files in ``out`` instead of refusing.
      progress: tqdm bar with chunks done, points per second and time left.
      distributed: this process takes chunks ``process_index::process_count`` (after
        ``jax.distributed.initialize``) on its local devices; process 0 writes the result.
      model_name: recorded in the manifest (e.g. the ``module:function`` it came from).
      wait_timeout: seconds process 0 waits for the other processes' chunks.
      **phase1: estimator settings (``method``, ``num_rows``, ``batch_size``, ...).

    Returns:
      the :class:`jcausal.ace.ACEResult` (identical whether or not the job was interrupted).

    Raises:
      FileExistsError: ``out`` holds another job (pass ``overwrite=True``).
      JobError: a chunk's computation failed (finished chunks are kept).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} exists and is not a folder")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be (n, k), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN/inf")
    cf = chunk_features
    if isinstance(cf, bool) or not isinstance(cf, (int, np.integer)) or cf < 1:
        raise ValueError(f"chunk_features must be a positive int, got {chunk_features!r}")
    stats = input_stats(X, low=phase1.pop("low", None), high=phase1.pop("high", None))
    k = X.shape[1]
    feats = np.arange(k) if features is None else np.atleast_1d(np.asarray(features))
    if alphas is None:
        alphas = np.asarray(intervention_grid(stats, num_alphas, feats))
    alphas = np.asarray(alphas, np.asarray(stats.mean).dtype)
    if alphas.ndim == 1:
        alphas = np.broadcast_to(alphas, (feats.size, alphas.size))
    if "data" not in phase1 and phase1.get("method") is None:
        phase1["data"] = X
    if alphas.shape[1] < max_order + 2:
        raise ValueError(f"{alphas.shape[1]} alphas are too few for max_order={max_order} (need >= "
                         f"{max_order + 2})")
    settings = {k_: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(type(v)))
                for k_, v in phase1.items() if k_ not in ("data", "devices", "mesh", "key")}
    job = _digest(model_name, settings, feats.tolist(), alphas.tobytes(), X.shape, _tree_digest(params),
                  hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest(), chunk_features, max_order)
    num_chunks = -(-feats.size // chunk_features)
    pid, nproc = (jax.process_index(), jax.process_count()) if distributed else (0, 1)

    old = job_status(out)
    if old is not None and old["job"] != job:
        if not overwrite:
            raise FileExistsError(
                f"{out} holds another job ({old.get('model', '?')}, {old['num_chunks']} chunks, "
                f"{len(old['done'])} done); pass overwrite=True (--overwrite) or choose another folder")
        if pid == 0:
            shutil.rmtree(out / CHUNKS, ignore_errors=True)
            (out / MANIFEST).unlink(missing_ok=True)
    (out / CHUNKS).mkdir(parents=True, exist_ok=True)
    manifest = {"job": job, "model": model_name, "num_chunks": num_chunks, "chunk_features": chunk_features,
                "features": feats.tolist(), "num_alphas": int(alphas.shape[1]), "settings": settings,
                "processes": nproc}
    if pid == 0:
        atomic_write_json(out / MANIFEST, {**manifest, "done": sorted(_finished(out, job, num_chunks))})
    mine = [c for c in range(num_chunks) if c % nproc == pid]
    done = _finished(out, job, num_chunks)
    todo = [c for c in mine if c not in done]
    if distributed:
        phase1.setdefault("devices", jax.local_devices())
    A = alphas.shape[1]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="ACE chunks", unit="chunk",
               disable=not progress)
    computed, t0 = [], time.perf_counter()
    for c in todo:
        sl = slice(c * chunk_features, min((c + 1) * chunk_features, feats.size))
        try:
            E, info = interventional_expectation(f, stats, alphas[sl], params=params, features=feats[sl],
                                                 return_info=True, **phase1)
        except Exception as err:
            bar.close()
            raise JobError(f"chunk {c} (features {feats[sl].tolist()}) failed: {type(err).__name__}: {err}; "
                           f"{len(done) + len(computed)} finished chunks are kept in {out / CHUNKS}") from err
        arrays = {"job": np.asarray(job), "expectations": np.asarray(E),
                  "features": feats[sl].astype(np.int32), "method": np.asarray(info.method)}
        if info.stderr is not None:
            arrays["stderr"] = np.asarray(info.stderr)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(_chunk_path(out, c), buf.getvalue())
        computed.append(c)
        if pid == 0:
            atomic_write_json(out / MANIFEST, {**manifest, "done": sorted(done | set(computed))})
        el = time.perf_counter() - t0
        bar.update()
        bar.set_postfix(points_per_s=f"{len(computed) * chunk_features * A / max(el, 1e-9):.1f}")
    bar.close()
    if pid != 0:
        return None
    deadline = time.monotonic() + wait_timeout
    while True:
        done = _finished(out, job, num_chunks)
        if len(done) == num_chunks:
            break
        if time.monotonic() > deadline:
            raise JobError(f"timed out waiting for chunks {sorted(set(range(num_chunks)) - done)[:10]} "
                           "from the other processes")
        time.sleep(0.5)
    parts = [read_npz_arrays(_chunk_path(out, c)) for c in range(num_chunks)]
    E = np.concatenate([p["expectations"] for p in parts])
    se = np.concatenate([p["stderr"] for p in parts]) if all("stderr" in p for p in parts) else None
    lo, hi = np.asarray(stats.low)[feats], np.asarray(stats.high)[feats]
    reg = R.fit_regressors(alphas, E, lo, hi, max_order=max_order)
    base = R.baseline(reg)
    res = ACEResult(jnp.asarray(feats, jnp.int32), jnp.asarray(alphas), jnp.asarray(E), reg, base,
                    None if se is None else jnp.asarray(se), jnp.asarray(k, jnp.int32))
    save_result(out / "ace.npz", res)
    meta = {**manifest, "done": list(range(num_chunks)), "computed_this_run": computed,
            "method": str(parts[0]["method"]), "devices": [str(d) for d in jax.devices()],
            "versions": {"jax": jax.__version__}, "seconds_this_run": time.perf_counter() - t0}
    atomic_write_json(out / "ace.json", meta)
    atomic_write_json(out / MANIFEST, {**manifest, "done": list(range(num_chunks)), "complete": True})
    return res
