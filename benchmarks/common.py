"""Helpers shared by the benchmark scripts: timing, machine description, JSON output, MNIST models."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jcausal._src.io import atomic_write_bytes
from jcausal.ace import Execution, make_estimator
from jcausal.ace.estimators import default_method

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"
RESULTS = REPO / "benchmarks" / "results"


def cast(tree, dtype):
    """Every floating leaf of ``tree`` as ``dtype``."""
    return jax.tree.map(lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
                        else a, tree)


def timed(fn, repeats: int):
    """``(output, median seconds, compile seconds)``: one warm-up call (its excess over the median
    is the compile time), then ``repeats`` timed calls, each ended by ``block_until_ready``."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    runs = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    med = statistics.median(runs)
    return out, med, max(first - med, 0.0)


def machine() -> dict:
    import numpy as np

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__,
            "devices": [str(d) for d in jax.devices()]}
    try:
        import os

        info["cpus"] = os.cpu_count()
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    return info


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())


def report_checks(found: dict[str, bool]) -> bool:
    """Print a ``--check`` run's checks, one ``ok``/``FAIL`` line each; whether all hold."""
    for name, holds in found.items():
        print(f"  {'ok  ' if holds else 'FAIL'} {name}")
    return all(found.values())


def require_mnist(data_dir: Path) -> None:
    if not any((data_dir / f"t10k-images-idx3-ubyte{ext}").is_file() for ext in ("", ".gz")):
        raise SystemExit(f"MNIST IDX files not found in {data_dir}; pass --data DIR")


def trained_mlp(sizes, activation, data, epochs, seed=0):
    """An MLP trained on ``data`` (an ImageData with flattened images): ``(apply, params)``."""
    from flax import nnx

    from jcausal.models import MLP, functional, train

    model = MLP(sizes, activation=activation, rngs=nnx.Rngs(seed))
    train(model, data.x_train, data.y_train, key=jax.random.key(seed), epochs=epochs, batch_size=128,
          learning_rate=1e-3, progress=False)
    return functional(model)


def phase1_objects(method=None, **kw) -> dict:
    """Flat benchmark settings as the driver takes them: the estimator's on the estimator, batch
    sizes on the :class:`jcausal.ace.Execution`."""
    run = Execution(**{k: kw.pop(k) for k in ("batch_size", "max_memory") if k in kw})
    data = kw.pop("data", None)
    est = make_estimator(method or default_method(data is not None), **kw)
    return {"method": est, "data": data, "run": run}
