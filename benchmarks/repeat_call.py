"""The cost of reading the model at every call (issue 21, item 2).

    python -m benchmarks.repeat_call [--quick] [--baseline-path DIR] [--out benchmarks/results]

Since issue 21 every call traces the user's model once: the arrays it reads (closed-over weights,
globals, module variables) become arguments of the compiled program, which is shared by every call of
the same computation. This measures, for eqn 2 (the default) on a 784-256-128-64-32-10 MLP closed
over by a lambda, 8 pixels x 10 alphas, 2,000 rows:

- ``first``: the first call (trace, compile, run);
- ``repeat``: the same callable again, weights unchanged;
- ``changed``: the same callable after its closed-over weights changed (and the error of the result
  against the same computation with the new weights passed as ``params=``: 0 now; the old library
  returned the stale result);
- ``fresh_lambda``: a new lambda of the same computation (the old library compiled again);
- ``params``: the model taking its weights as ``params=`` (the path that never went stale).

``--baseline-path DIR`` also runs the same measurement on the jcausal checkout in ``DIR`` (e.g. a
worktree of the commit before the fix) in a subprocess, for the before/after table. Writes
``repeat_call[_quick].json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import RESULTS, machine, write_json


def measure(quick: bool, repeats: int) -> dict:
    """Everything timed in one process (only the public API: runs on older checkouts too)."""
    import statistics
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jcausal.ace import input_stats, interventional_expectation

    sizes = (784, 256, 128, 64, 32, 10) if not quick else (64, 32, 10)
    rng = np.random.default_rng(0)
    Ws = [jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32) for a, b in zip(sizes, sizes[1:])]
    n = 2000 if not quick else 200
    X = rng.uniform(size=(n, sizes[0])).astype(np.float32)
    X[0], X[1] = 0.0, 1.0  # the grid ends (0 and 1) lie in the data range
    stats = input_stats(X)
    feats = list(range(0, sizes[0], sizes[0] // 8))[:8]
    alphas = np.linspace(0.0, 1.0, 10)

    def net(ws, x):
        for w in ws[:-1]:
            x = jax.nn.relu(x @ w)
        return jax.nn.softmax(x @ ws[-1])

    state = {"ws": Ws}

    def run(f, **kw):
        E = interventional_expectation(f, stats, alphas, features=feats, data=X, **kw)
        return jax.block_until_ready(E)

    def clock(fn):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    f = lambda x: net(state["ws"], x)  # noqa: E731 - the closure a user writes
    t0 = time.perf_counter()
    run(f)
    first = time.perf_counter() - t0
    repeat = clock(lambda: run(f))
    state["ws"] = [2.0 * w for w in Ws]
    t0 = time.perf_counter()
    got = run(f)
    changed = time.perf_counter() - t0
    ref = run(net, params=state["ws"])
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(ref))))
    fresh = clock(lambda: run(lambda x: net(state["ws"], x)))
    params = clock(lambda: run(net, params=state["ws"]))
    return {"first_s": first, "repeat_s": repeat, "changed_s": changed, "changed_max_abs_error": err,
            "fresh_lambda_s": fresh, "params_s": params, "sizes": list(sizes), "rows": n,
            "points": len(feats) * len(alphas), "repeats": repeats}


def _baseline(path: Path, quick: bool, repeats: int) -> dict:
    src = inspect.getsource(measure) + f"\nimport json\nprint(json.dumps(measure({quick}, {repeats})))\n"
    env = {**os.environ, "PYTHONPATH": str(path)}
    # run from that checkout: '-c' puts the working folder first on sys.path
    r = subprocess.run([sys.executable, "-c", src], env=env, cwd=path, capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _figure(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["first_s", "repeat_s", "changed_s", "fresh_lambda_s", "params_s"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(rows)
    for j, (label, r) in enumerate(rows.items()):
        ax.bar([i + j * width for i in range(len(keys))], [r[k] for k in keys], width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
    ax.set_xticklabels(["first call", "repeat", "after change", "fresh lambda", "params="])
    ax.set_yscale("log")
    ax.set_ylabel("seconds per call")
    ax.set_title("eqn 2, closed-over MLP: cost of reading the model at every call")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline-path", type=Path, help="a jcausal checkout to measure as 'before'")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    rows = {"jcausal": measure(a.quick, a.repeats)}
    if a.baseline_path is not None:
        rows["before (cached on identity)"] = _baseline(a.baseline_path, a.quick, a.repeats)
    stem = "repeat_call_quick" if a.quick else "repeat_call"
    result = {"machine": machine(), "results": rows}
    write_json(a.out / f"{stem}.json", result)
    _figure(rows, a.out / f"{stem}.png")
    for label, r in rows.items():
        print(f"{label:30s} first {r['first_s']:.2f} s, repeat {r['repeat_s'] * 1e3:.1f} ms, after change "
              f"{r['changed_s'] * 1e3:.1f} ms (max error {r['changed_max_abs_error']:.2e}), fresh lambda "
              f"{r['fresh_lambda_s'] * 1e3:.1f} ms, params= {r['params_s'] * 1e3:.1f} ms")
    return result


if __name__ == "__main__":
    main()
