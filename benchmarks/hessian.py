"""Exact vs approximate Hessian methods for ACE Phase I: speed, memory, accuracy, scaling, peers.

    python -m benchmarks.hessian [--quick] [--data DIR] [--out benchmarks/results] [--repeats 5]

For each model and Phase I method: median wall time per (feature, alpha) point after warm-up,
compile time, the compiled program's buffer bytes (XLA memory analysis: arguments + outputs +
temporaries), and the error against a float64 ``exact`` reference (max abs, and relative to
max |reference|). Also the forward-pass floor ``C_f`` (time per input of one jitted batched
forward pass) and ``R = T_grid / (N_eq * C_f)`` with ``N_eq = features * alphas * directions``;
scaling sweeps over inputs ``k``, alphas and rank with fitted log-log slopes; and PyTorch peers
(``benchmarks/peers``; the ``bench`` extra) on identical weights and moments.

Writes ``hessian[_quick].json`` and ``hessian[_quick]_{pareto,scaling}.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

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
from jcausal.ace.interventional import compiled
from jcausal.data import load_iris, load_mnist
from jcausal.models import GCECNN, MLP, functional, train

MNIST_MLP = (784, 256, 128, 64, 32, 10)


def softmax_of(apply):
    def f(p, x):
        return jax.nn.softmax(apply(p, x))

    return f


class Case:
    """A model to benchmark: body ``apply(params, x)`` (logits), data rows, features, alphas."""

    def __init__(self, name, apply, params, X, feats, alphas, piecewise_linear, ref_batch=4):
        self.name, self.apply, self.params, self.X = name, apply, params, X
        self.f = softmax_of(apply)
        self.feats, self.alphas = list(feats), np.asarray(alphas)
        self.piecewise_linear = piecewise_linear
        self.n_pts = len(self.feats) * self.alphas.size
        self.stats32 = input_stats(X, low=0.0, high=1.0)
        with jax.enable_x64(True):
            self.stats64 = input_stats(jnp.asarray(X, jnp.float64), low=0.0, high=1.0)
            self.ref = np.asarray(interventional_expectation(
                self.f, self.stats64, self.alphas, params=cast(params, jnp.float64),
                features=self.feats, **phase1_objects("exact", batch_size=ref_batch)))


def bench_method(case: Case, label, method, repeats, *, x64=False, **kw):
    f = case.f
    if method == "gauss_newton":
        f, kw = case.apply, {**kw, "head": jax.nn.softmax}
    with jax.enable_x64(x64):
        st = case.stats64 if x64 else case.stats32
        p = cast(case.params, jnp.float64 if x64 else jnp.float32)
        if method == "monte_carlo":
            kw["data"] = jnp.asarray(case.X[: kw.pop("n")], st.mean.dtype)
        args = dict(params=p, features=case.feats, **phase1_objects(method, **kw))
        t0 = time.perf_counter()
        mem = compiled(f, st, case.alphas, **args).memory_analysis()  # lower + compile only
        compile_s = time.perf_counter() - t0
        (out, info), t, _ = timed(
            lambda: interventional_expectation(f, st, case.alphas, return_info=True, **args), repeats)
    err = np.abs(np.asarray(out, np.float64) - case.ref)
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    row = {"model": case.name, "label": label, "method": method, "dtype": "float64" if x64 else "float32",
           "rank": info.rank, "discarded_variance": info.discarded_variance, "points": case.n_pts,
           "seconds_per_point": t / case.n_pts, "grid_seconds": t, "compile_seconds": compile_s,
           "peak_bytes": int(peak), "max_abs_error": float(err.max()),
           "rel_error": float(err.max() / np.abs(case.ref).max())}
    print(f"  {case.name:12s} {label:28s} {row['seconds_per_point'] * 1e3:10.3f} ms/pt  "
          f"rel.err {row['rel_error']:.1e}  mem {peak / 2**20:8.1f} MiB  compile {compile_s:5.1f} s",
          flush=True)
    return row


def forward_floor(case: Case, repeats, batch=8192):
    """C_f: seconds per input of one jitted batched forward pass on a large batch."""
    fwd = jax.jit(jax.vmap(case.f, in_axes=(None, 0)))
    X = jnp.asarray(np.resize(case.X, (batch, case.X.shape[1])), jnp.float32)
    _, t, _ = timed(lambda: fwd(case.params, X), repeats)
    return t / batch


def methods_for(case: Case, quick: bool):
    k = case.X.shape[1]
    ms = [("exact", "exact", {}), ("directional full", "directional", {})]
    if k > 8:
        levels = (0.99,) if quick else (0.90, 0.95, 0.99)
        ms += [(f"directional {int(q * 100)}% var", "directional", {"rank": q}) for q in levels]
    ms += [(f"hutchinson S={s}", "hutchinson", {"key": jax.random.key(0), "num_samples": s})
           for s in ((8,) if quick else (8, 64, 256))]
    if case.piecewise_linear:
        ms.append(("gauss_newton", "gauss_newton", {}))
    ms.append(("finite_difference f64", "finite_difference", {"x64": True, "step": 1e-4}))
    for n in (1000,) if quick else (1000, 10000):
        if n <= len(case.X):
            ms.append((f"monte_carlo n={n}", "monte_carlo", {"n": n, "batch_size": 4}))
    return ms


# ----------------------------------------------------------------------------- scaling


def scaling(quick: bool, repeats: int):
    """Directional full/truncated rank on a random smooth MLP k-256-128-64-32-10: time vs k,
    alphas and rank, with least-squares slopes of log T against log N_eq."""
    rng = np.random.default_rng(0)
    ks = (64, 256) if quick else (64, 256, 784, 3072)
    As = (2, 4) if quick else (2, 4, 8, 16, 32)
    ranks = (16, 64) if quick else (49, 98, 196, 392, 784)
    sweeps = {"k": [], "alphas": [], "rank": []}
    models = {}

    def setup(k):
        if k not in models:
            apply, params = functional(MLP((k, 256, 128, 64, 32, 10), activation="softplus",
                                           rngs=nnx.Rngs(k)))
            B = rng.normal(size=(k, k)) / np.sqrt(k)
            X = (rng.normal(size=(max(2 * k, 256), k)) @ B * 0.2 + 0.5).astype(np.float32)
            models[k] = (softmax_of(apply), params, input_stats(X, low=0.0, high=1.0))
        return models[k]

    def run(sweep, k, A, rank, F=4):
        f, params, st = setup(k)
        alphas = np.linspace(0.1, 0.9, A)
        objects = phase1_objects("directional", rank=rank)
        _, t, _ = timed(lambda: interventional_expectation(f, st, alphas, params=params,
                                                           features=list(range(F)), **objects), repeats)
        r = k if rank is None else rank
        sweeps[sweep].append({"k": k, "features": F, "alphas": A, "rank": r, "N_eq": F * A * r,
                              "grid_seconds": t})
        print(f"  scaling {sweep:6s} k={k:5d} A={A:3d} r={r:5d}  {t * 1e3:9.2f} ms", flush=True)

    for k in ks:
        run("k", k, 4, None)
    k_mid = ks[-1] if quick else 784
    for A in As:
        run("alphas", k_mid, A, None)
    for r in ranks:
        run("rank", k_mid, 4, r)
    slopes = {}
    for name, rows in sweeps.items():
        x = np.log([r["N_eq"] for r in rows])
        y = np.log([r["grid_seconds"] for r in rows])
        slopes[name] = float(np.polyfit(x, y, 1)[0]) if len(rows) > 1 else None
    return sweeps, slopes


# ----------------------------------------------------------------------------- peers


def peers(case: Case, ours_row: dict, quick: bool):
    try:
        import torch

        from benchmarks.peers.torch_ace import authors_strategy, torch_func, torch_mlp
    except ImportError as err:
        print(f"  peers skipped: {err} (install the 'bench' extra)")
        return {"skipped": f"torch not importable: {err}"}
    tm = torch_mlp(nnx.to_pure_dict(case.params), activation="softplus")
    mean, cov, V = (np.asarray(a) for a in (case.stats32.mean, case.stats32.cov, case.stats32.factor))
    out = {}
    t0 = time.perf_counter()
    b = torch_func(tm, mean, V, case.feats, case.alphas)
    tb = (time.perf_counter() - t0) / case.n_pts
    t0 = time.perf_counter()
    n_a = 1
    a = authors_strategy(tm, mean, cov, case.feats[:1], case.alphas[:n_a])
    ta = (time.perf_counter() - t0) / n_a
    ref = case.ref
    scale = np.abs(ref).max()
    out["torch_func"] = {"seconds_per_point": tb, "points": case.n_pts,
                         "rel_error_vs_f64_exact": float(np.abs(b - ref).max() / scale),
                         "speedup_of_jcausal": tb / ours_row["seconds_per_point"]}
    out["authors_strategy"] = {"seconds_per_point": ta, "points": n_a,
                               "rel_error_vs_f64_exact": float(np.abs(a - ref[:1, :n_a]).max() / scale),
                               "speedup_of_jcausal": ta / ours_row["seconds_per_point"]}
    out["torch"] = torch.__version__
    out["torch_threads"] = torch.get_num_threads()
    for name in ("torch_func", "authors_strategy"):
        r = out[name]
        print(f"  peer {name:18s} {r['seconds_per_point'] * 1e3:10.3f} ms/pt  rel.err "
              f"{r['rel_error_vs_f64_exact']:.1e}  jcausal is {r['speedup_of_jcausal']:.1f}x faster",
              flush=True)
    return out


# ----------------------------------------------------------------------------- driver


def build_cases(data_dir: Path, quick: bool):
    cases = []
    if data_dir is not None:
        require_mnist(data_dir)
        data = load_mnist(data_dir, flatten=True, val_fraction=0.2, seed=0)
        X = np.concatenate([data.x_train, data.x_val])  # all 10,000 test-set images for moments
        epochs = 1 if quick else 2
        feats = [350, 405, 460] if quick else [300, 350, 378, 405, 430, 460, 490, 520]
        alphas = [0.0, 1.0] if quick else [0.0, 0.33, 0.67, 1.0]
        for act in ("softplus", "relu"):
            apply, params = trained_mlp(MNIST_MLP, act, data, epochs, seed=0 if act == "softplus" else 1)
            cases.append(Case(f"mnist_mlp_{act}", apply, params, X, feats, alphas, act == "relu"))
        if not quick:
            cnn = GCECNN(10, rngs=nnx.Rngs(2))
            train(cnn, data.x_train.reshape(-1, 28, 28), data.y_train, key=jax.random.key(2), epochs=1,
                  batch_size=64, progress=False)
            apply, params = functional(cnn)
            cases.append(Case("gce_cnn", apply, params, X, [378, 406], [0.0, 1.0], True, ref_batch=1))
    iris = load_iris()
    model = MLP((4, 8, 3), rngs=nnx.Rngs(0))
    train(model, iris.X, iris.y, key=jax.random.key(0), epochs=300, batch_size=16, learning_rate=1e-2,
          progress=False)
    apply, params = functional(model)
    cases.append(Case("iris_mlp", apply, params, iris.X, [0, 1, 2, 3], np.linspace(0, 1, 8), True))
    return cases


def run(data_dir, quick, out_dir, repeats):
    t_start = time.perf_counter()
    cases = build_cases(data_dir, quick)
    rows, floors = [], {}
    for case in cases:
        print(f"{case.name}: {case.n_pts} points, k = {case.X.shape[1]}", flush=True)
        for label, method, kw in methods_for(case, quick):
            kw = dict(kw)
            x64 = kw.pop("x64", False)
            if case.name == "gce_cnn" and method in ("directional", "hutchinson", "exact"):
                kw.setdefault("batch_size", 1)
                kw.setdefault("direction_batch_size", 98)
            rows.append(bench_method(case, label, method, repeats, x64=x64, **kw))
        c_f = forward_floor(case, repeats)
        floors[case.name] = c_f
        for r in rows:
            if r["model"] == case.name and r["method"] in ("directional", "finite_difference",
                                                           "hutchinson"):
                dirs = r["rank"] if r["method"] != "hutchinson" else int(r["label"].split("=")[1])
                r["R"] = r["grid_seconds"] / (r["points"] * dirs * c_f)
        print(f"  forward floor C_f = {c_f * 1e6:.3f} us/input", flush=True)
    print("scaling:", flush=True)
    sweeps, slopes = scaling(quick, repeats)
    mnist = next((c for c in cases if c.name == "mnist_mlp_softplus"), None)
    peer = {"skipped": "no MNIST data"}
    if mnist is not None:
        print("peers:", flush=True)
        ours = next(r for r in rows if r["model"] == mnist.name and r["label"] == "directional full")
        peer = peers(mnist, ours, quick)
    summary = _summary(rows, peer)
    result = {"benchmark": "hessian", "quick": quick, "repeats": repeats, "machine": machine(),
              "forward_floor_seconds_per_input": floors, "rows": rows, "scaling": sweeps,
              "scaling_slopes": slopes, "peers": peer, "summary": summary,
              "total_seconds": time.perf_counter() - t_start}
    name = "hessian_quick" if quick else "hessian"
    write_json(out_dir / f"{name}.json", result)
    _plots(rows, sweeps, slopes, out_dir, name)
    print("summary:", ", ".join(f"{k} = {v:.3g}" for k, v in summary.items() if v is not None))
    return result


def _summary(rows, peer):
    by = {(r["model"], r["label"]): r for r in rows}
    s = {}
    if ("mnist_mlp_softplus", "exact") in by:
        ex, dr = by[("mnist_mlp_softplus", "exact")], by[("mnist_mlp_softplus", "directional full")]
        s["directional_speedup_vs_exact"] = ex["seconds_per_point"] / dr["seconds_per_point"]
        s["directional_rel_error"] = dr["rel_error"]
        s["directional_R"] = dr.get("R")
        exr, gn = by[("mnist_mlp_relu", "exact")], by[("mnist_mlp_relu", "gauss_newton")]
        s["gauss_newton_speedup_vs_exact"] = exr["seconds_per_point"] / gn["seconds_per_point"]
        s["gauss_newton_rel_error"] = gn["rel_error"]
    for name in ("authors_strategy", "torch_func"):
        if name in peer:
            s[f"speedup_vs_{name}"] = peer[name]["speedup_of_jcausal"]
    return s


def _plots(rows, sweeps, slopes, out_dir, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for r in (r for r in rows if r["model"] == model):
            x, y = r["seconds_per_point"] * 1e3, max(r["rel_error"], 1e-17)
            ax.scatter(x, y)
            ax.annotate(r["label"], (x, y), fontsize=7, xytext=(3, 2), textcoords="offset points")
        ax.set(xscale="log", yscale="log", title=model, xlabel="ms per (feature, alpha) point",
               ylabel="error vs float64 exact (rel. to max |ref|)")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Accuracy vs time (lower left is better)")
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}_pareto.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for sweep, pts in sweeps.items():
        x = np.array([p["N_eq"] for p in pts], float)
        y = np.array([p["grid_seconds"] for p in pts])
        ax.loglog(x, y, "o-", label=f"vary {sweep} (slope {slopes[sweep]:.2f})" if slopes[sweep] else sweep)
    ax.set(xlabel="N_eq = features x alphas x directions", ylabel="seconds per grid",
           title="directional: cost vs work (log-log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}_scaling.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the MNIST IDX files")
    ap.add_argument("--no-mnist", action="store_true", help="skip the MNIST models (Iris only)")
    ap.add_argument("--quick", action="store_true", help="small settings (under 3 minutes)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    run(None if args.no_mnist else args.data, args.quick, args.out, args.repeats)


if __name__ == "__main__":
    main()
