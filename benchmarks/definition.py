"""Accuracy against the definition: every Phase I method against eqn 2 over all rows, on trained
MNIST models (ACE-definition issue).

    python -m benchmarks.definition [--quick] [--data DIR] [--out benchmarks/results] [--repeats 3]
                                    [--models mlp cnn]

Models, trained on 8,000 rows of the MNIST test set (the other 2,000 held out): the
784-256-128-64-32-10 MLP with ReLU and with softplus, and the GCE paper's CNN (Table 1). Outputs are
the 10 softmax probabilities. For each model, ``F`` pixels of high variance x ``A`` alphas on
[0, 1]; the reference is eqn 2 over all 8,000 rows (the Split fast path, float32; its standard
error is reported). For each method: time per (feature, alpha) point after warm-up, the error of
``E`` and of the ACE curves (``E(a) - mean_a E(a)``) relative to max |reference|, and
``R = T / (N_eq C_f)`` with ``N_eq`` = rows x points for eqn 2 and points x directions for eqn 4.
Also the control-variate study: the second-order Taylor polynomial of ``f`` around ``mu_ia``
(whose mean over the rows is eqn 4's value exactly) as a control variate for eqn 2, reported as
the variance ratio of the ACE estimate (ship only if >= 2).

Writes ``definition[_quick].json`` and ``definition[_quick].png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import DEFAULT_DATA, RESULTS, machine, phase1_objects, require_mnist, timed, write_json
from jcausal._src.xla import jit
from jcausal.ace import input_stats, interventional_expectation
from jcausal.data import load_mnist
from jcausal.models import GCECNN, MLP, accuracy, functional, split_functional, train

MNIST_MLP = (784, 256, 128, 64, 32, 10)


MODELS = ("mlp", "cnn")


def _models(data, quick, seed=0, models=MODELS):
    Xtr, ytr = data.x_train, data.y_train
    if quick:
        Xtr, ytr = Xtr[:2000], ytr[:2000]
    out = []
    for act in ("relu", "softplus") if "mlp" in models else ():
        m = MLP(MNIST_MLP, activation=act, rngs=nnx.Rngs(seed))
        train(m, Xtr, ytr, key=jax.random.key(seed), epochs=2 if quick else 8, batch_size=128,
              learning_rate=1e-3, progress=False)
        out.append((f"MLP {act}", m, act == "relu"))
    if "cnn" not in models:
        return out
    cnn = GCECNN(10, rngs=nnx.Rngs(seed))
    train(cnn, Xtr, ytr, key=jax.random.key(seed), epochs=1 if quick else 3, batch_size=64,
          learning_rate=1e-3, progress=False)
    out.append(("GCE CNN", cnn, True))
    return out


def _ace(E):
    return E - E.mean(axis=1, keepdims=True)


def control_variate_ratio(apply, params, X, i, alphas, rows=256, seed=0):
    """Variance of the eqn-2 ACE estimate (E(a_last) - E(a_first)) per row, without and with the
    second-order Taylor polynomial around mu_ia as a control variate (optimal coefficient)."""
    rng = np.random.default_rng(seed)
    Xs = jnp.asarray(X[rng.choice(len(X), rows, replace=False)])
    mu = jnp.asarray(X.mean(0))

    def f(x):
        return jax.nn.softmax(apply(params, x))

    def taylor(center, x):
        d = x - center
        g0, g1 = jax.jvp(f, (center,), (d,))
        _, h = jax.jvp(lambda c: jax.jvp(f, (c,), (d,))[1], (center,), (d,))
        return g0 + g1 + 0.5 * h

    def per_row(a):
        xa = Xs.at[:, i].set(a)
        c = mu.at[i].set(a)
        return jax.vmap(f)(xa), jax.vmap(lambda x: taylor(c, x))(xa)

    y1, g1 = per_row(alphas[-1])
    y0, g0 = per_row(alphas[0])
    dy = np.asarray(y1 - y0, np.float64)  # (rows, m)
    dg = np.asarray(g1 - g0, np.float64)
    var_plain = dy.var(0)
    cov = ((dy - dy.mean(0)) * (dg - dg.mean(0))).mean(0)
    var_g = dg.var(0)
    c = np.where(var_g > 0, cov / np.where(var_g > 0, var_g, 1), 0.0)
    var_cv = (dy - c * dg).var(0)
    j = int(np.argmax(var_plain))
    return {"feature": int(i), "output": j, "variance_plain": float(var_plain[j]),
            "variance_with_cv": float(var_cv[j]), "ratio": float(var_plain[j] / max(var_cv[j], 1e-30)),
            "median_ratio_over_outputs": float(np.median(var_plain / np.maximum(var_cv, 1e-30)))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rows, pixels, epochs and methods")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                    help="which models: the two MNIST MLPs (relu, softplus) and/or the GCE CNN")
    args = ap.parse_args(argv)
    require_mnist(args.data)
    data = load_mnist(args.data, val_fraction=0.2, seed=0, flatten=True)
    X = np.asarray(data.x_train, np.float32)
    if args.quick:
        X = X[:1000]
    stats = input_stats(X, low=0.0, high=1.0)
    var = np.asarray(jnp.diag(stats.cov))
    F = 3 if args.quick else 5
    feats = [int(i) for i in np.argsort(var)[::-1][: 40 : 40 // F][:F]]
    A = 4 if args.quick else 6
    alphas = np.linspace(0.0, 1.0, A).astype(np.float32)
    n_pts = F * A
    rows_out, cv_out = [], []
    for name, model, piecewise in _models(data, args.quick, models=args.models):
        apply, params = functional(model)
        split, sparams = split_functional(model)
        probs_split = split.then(jax.nn.softmax)

        def probs(p, x, apply=apply):
            return jax.nn.softmax(apply(p, x))

        acc = accuracy(apply, params, data.x_val, data.y_val)
        fwd = jit(jax.vmap(probs, in_axes=(None, 0)))  # the options jcausal compiles with
        _, tf, _ = timed(lambda fwd=fwd, params=params: fwd(params, jnp.asarray(X[:2048])), args.repeats)
        C_f = tf / 2048
        ref, rinfo = interventional_expectation(probs_split, stats, alphas, params=sparams, features=feats,
                                                data=X, return_info=True)
        ref = np.asarray(ref, np.float64)
        scale_E, scale_A = np.abs(ref).max(), np.abs(_ace(ref)).max()
        print(f"{name}: val acc {acc:.3f}; reference E in [{ref.min():.3f}, {ref.max():.3f}], "
              f"max|ACE| {scale_A:.4f}, max stderr {float(np.max(rinfo.stderr)):.2e}, C_f {C_f * 1e6:.1f} us",
              flush=True)
        cnn = name.startswith("GCE")
        methods = [
            ("eqn 2, Split, all rows (default)", probs_split, sparams, {"data": X}),
            ("eqn 2, plain f (old monte_carlo), all rows", probs, params, {"data": X, "method": "monte_carlo",
                                                                           "row_batch_size": 256}),
            ("eqn 2, Split, row subsample", probs_split, sparams,
             {"data": X, "num_rows": min(1000, len(X) // 2), "key": jax.random.key(0)}),
            ("eqn 4 directional", probs, params, {"method": "directional", "batch_size": 4 if cnn else 32}),
            ("eqn 4 directional 95% var", probs, params, {"method": "directional", "rank": 0.95,
                                                          "batch_size": 4 if cnn else 32}),
        ]
        if piecewise:
            methods.append(("eqn 4 gauss_newton", apply, params, {"method": "gauss_newton",
                                                                  "head": jax.nn.softmax}))
        if not cnn and not args.quick:
            methods.append(("eqn 4 exact (jax.hessian)", probs, params, {"method": "exact", "batch_size": 4}))
        for label, f, p, kw in methods:
            if args.quick and "plain" in label and cnn:
                continue
            t0 = time.perf_counter()
            (out, info), t, _ = timed(lambda f=f, p=p, kw=kw: interventional_expectation(
                f, stats, alphas, params=p, features=feats, return_info=True, check_expansion=False,
                **phase1_objects(**kw)),
                1 if (cnn and "plain" in label) else args.repeats)  # the slow CNN plain row: once
            out = np.asarray(out, np.float64)
            total = time.perf_counter() - t0
            n_eq = n_pts * (info.num_rows if info.eqn == 2 else info.rank)
            row = {"model": name, "val_accuracy": acc, "label": label, "method": info.method, "eqn": info.eqn,
                   "seconds_per_point": t / n_pts, "R": t / (n_eq * C_f), "rank": info.rank,
                   "num_rows": info.num_rows,
                   "E_error_rel": float(np.abs(out - ref).max() / scale_E),
                   "ACE_error_rel": float(np.abs(_ace(out) - _ace(ref)).max() / scale_A),
                   "E_range": [float(out.min()), float(out.max())], "wall_seconds": total}
            rows_out.append(row)
            print(f"  {label:44s} {row['seconds_per_point'] * 1e3:9.2f} ms/pt  R {row['R']:7.2f}  "
                  f"E err {row['E_error_rel']:.2e}  ACE err {row['ACE_error_rel']:.2e}", flush=True)
        if not cnn:
            cv = control_variate_ratio(apply, params, X, feats[0], alphas)
            cv["model"] = name
            cv_out.append(cv)
            print(f"  control variate: variance ratio {cv['ratio']:.2f} (median over outputs "
                  f"{cv['median_ratio_over_outputs']:.2f})", flush=True)
    by = {(r["model"], r["label"]): r for r in rows_out}
    summary = {}
    for mdl in ("MLP relu", "MLP softplus"):
        fast = by.get((mdl, "eqn 2, Split, all rows (default)"))
        old = by.get((mdl, "eqn 2, plain f (old monte_carlo), all rows"))
        if fast and old:
            speedup = old["seconds_per_point"] / fast["seconds_per_point"]
            summary[f"{mdl}: split speedup over old monte_carlo"] = speedup
    summary["control_variate_best_ratio"] = max((c["ratio"] for c in cv_out), default=None)
    payload = {"machine": machine(), "features": feats, "alphas": alphas.tolist(), "rows_reference": len(X),
               "models": list(args.models), "rows": rows_out, "control_variate": cv_out, "summary": summary}
    suffix = "_quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"definition{suffix}.json", payload)
    _plot(rows_out, args.out / f"definition{suffix}.png")
    print(summary)
    return payload


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, mdl in zip(axes[0], models):
        for r in (r for r in rows if r["model"] == mdl):
            ax.scatter(r["seconds_per_point"] * 1e3, max(r["ACE_error_rel"], 1e-8),
                       marker="o" if r["eqn"] == 2 else "s")
            ax.annotate(r["label"], (r["seconds_per_point"] * 1e3, max(r["ACE_error_rel"], 1e-8)), fontsize=6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(0.02, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("ms per (feature, alpha) point")
        ax.set_ylabel("ACE error / max|ACE| vs eqn 2, all rows")
        ax.set_title(mdl)
    fig.tight_layout()
    from io import BytesIO

    from jcausal._src.io import atomic_write_bytes

    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    main()
