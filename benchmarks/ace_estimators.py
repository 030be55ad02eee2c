"""Phase I estimators on the ACE paper's MNIST MLP (784-256-128-64-32-10): time per (feature, alpha)
point and error against a float64 ``exact`` reference.

    python -m benchmarks.ace_estimators [--data DIR] [--quick] [--out benchmarks/results]

Models: the MLP with a smooth activation (softplus) for every method, and with ReLU for
``gauss_newton`` (compared with ``exact`` on that same ReLU model); outputs are softmax
probabilities. Statistics come from the MNIST test set (``../shared/data/mnist`` or ``--data``).
Each timing is the median of ``--repeats`` runs after a warm-up call (``block_until_ready``);
compile time is the first call minus that median. Writes ``ace_estimators.json`` and a PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    DEFAULT_DATA,
    RESULTS,
    cast,
    machine,
    phase1_objects,
    require_mnist,
    timed,
    trained_mlp,
    write_json,
)
from jcausal.ace import input_stats, interventional_expectation
from jcausal.data import load_mnist

SIZES = (784, 256, 128, 64, 32, 10)


def run(data_dir: Path, quick: bool, out_dir: Path, repeats: int) -> dict:
    require_mnist(data_dir)
    data = load_mnist(data_dir, flatten=True, val_fraction=0.2, seed=0)
    epochs = 1 if quick else 3
    feats = [350, 405, 460] if quick else [300, 350, 378, 405, 430, 460, 490, 520]
    alphas = np.array([0.0, 1.0]) if quick else np.array([0.0, 0.33, 0.67, 1.0])
    n_pts = len(feats) * len(alphas)
    X = data.x_train
    stats32 = input_stats(X, low=0.0, high=1.0)

    smooth = trained_mlp(SIZES, "softplus", data, epochs)
    relu = trained_mlp(SIZES, "relu", data, epochs, seed=1)
    probs = {}  # softmax outputs of each model, as (f, params) pairs sharing one callable

    def softmax_of(apply):
        return lambda p, x: jax.nn.softmax(apply(p, x))

    for name, (apply, params) in (("softplus", smooth), ("relu", relu)):
        probs[name] = (softmax_of(apply), params, apply)

    # float64 references (exact Hessian, float64 parameters and moments)
    refs = {}
    with jax.enable_x64(True):
        stats64 = input_stats(jnp.asarray(X, jnp.float64), low=0.0, high=1.0)
        for name, (f, params, _) in probs.items():
            refs[name] = np.asarray(interventional_expectation(
                f, stats64, alphas, params=cast(params, jnp.float64), features=feats,
                **phase1_objects("exact", batch_size=4)))

    rows = []

    def bench(label, model_name, method, *, x64=False, **kw):
        f, params, body = probs[model_name]
        if method == "gauss_newton":
            f, kw = body, {**kw, "head": jax.nn.softmax}
        ctx = jax.enable_x64(x64)
        with ctx:
            st = stats64 if x64 else stats32
            p = cast(params, jnp.float64 if x64 else jnp.float32)
            if method == "monte_carlo":
                kw["data"] = jnp.asarray(X[: kw.pop("n")], st.mean.dtype)

            def call():
                return interventional_expectation(f, st, alphas, params=p, features=feats,
                                                  return_info=True, **phase1_objects(method, **kw))

            (out, info), t, compile_s = timed(call, repeats)
        ref = refs[model_name]
        err = np.abs(np.asarray(out, np.float64) - ref)
        rows.append({
            "label": label, "model": model_name, "method": method,
            "dtype": "float64" if x64 else "float32", "rank": info.rank,
            "discarded_variance": info.discarded_variance,
            "seconds_per_point": t / n_pts, "compile_seconds": compile_s,
            "max_abs_error": float(err.max()), "rel_error": float(err.max() / np.abs(ref).max()),
        })
        print(f"{label:34s} {t / n_pts * 1e3:9.3f} ms/pt  rel.err {rows[-1]['rel_error']:.2e}  "
              f"(compile {compile_s:.1f} s)", flush=True)

    bench("exact (softplus)", "softplus", "exact", batch_size=4)
    bench("directional full (softplus)", "softplus", "directional")
    for frac in (0.90, 0.95, 0.99):
        bench(f"directional {frac:.0%} var (softplus)", "softplus", "directional", rank=frac)
    for s in (8, 64):
        bench(f"hutchinson S={s} (softplus)", "softplus", "hutchinson", key=jax.random.key(0),
              num_samples=s)
    bench("finite_difference f64 (softplus)", "softplus", "finite_difference", x64=True, step=1e-4)
    bench("monte_carlo n=1000 (softplus)", "softplus", "monte_carlo", n=1000, batch_size=4)
    bench("exact (relu)", "relu", "exact", batch_size=4)
    bench("directional full (relu)", "relu", "directional")
    bench("gauss_newton (relu)", "relu", "gauss_newton")

    by = {r["label"]: r for r in rows}
    summary = {
        "directional_speedup_vs_exact": by["exact (softplus)"]["seconds_per_point"]
        / by["directional full (softplus)"]["seconds_per_point"],
        "directional_rel_error": by["directional full (softplus)"]["rel_error"],
        "gauss_newton_speedup_vs_exact": by["exact (relu)"]["seconds_per_point"]
        / by["gauss_newton (relu)"]["seconds_per_point"],
        "gauss_newton_rel_error": by["gauss_newton (relu)"]["rel_error"],
    }
    result = {
        "benchmark": "ace_estimators", "quick": quick, "model": list(SIZES),
        "features": feats, "alphas": alphas.tolist(), "points": n_pts, "repeats": repeats,
        "machine": machine(),
        "rows": rows, "summary": summary,
    }
    print(json.dumps(summary, indent=2))
    name = "ace_estimators_quick" if quick else "ace_estimators"
    write_json(out_dir / f"{name}.json", result)
    _plot(rows, out_dir / f"{name}.png")
    return result


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["seconds_per_point"] * 1e3, max(r["rel_error"], 1e-17),
                   marker="o" if r["model"] == "softplus" else "s")
        ax.annotate(r["label"], (r["seconds_per_point"] * 1e3, max(r["rel_error"], 1e-17)),
                    fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="time per (feature, alpha) point [ms]",
           ylabel="error vs float64 exact (relative to max |ref|)",
           title="ACE Phase I on the 784-256-128-64-32-10 MNIST MLP")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the MNIST IDX files")
    ap.add_argument("--quick", action="store_true", help="few points, one training epoch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    run(args.data, args.quick, args.out, args.repeats)


if __name__ == "__main__":
    main()
