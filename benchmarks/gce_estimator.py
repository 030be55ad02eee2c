"""Error of the GCE information-flow estimator at a trained MNIST 3/8 explainer (C about 0.5 nats).

    python -m benchmarks.gce_estimator [--quick] [--data DIR] [--out benchmarks/results] [--reps 16]

Trains the explainer once (the slow test's recipe: 300 steps of D alone, then 400 of C + 0.05 D;
about two minutes; cached in ``benchmarks/.cache/``, which git ignores), then, for every
``(sampler, N_alpha, N_beta)`` in the list, ``reps`` independent estimates of ``C`` and of its
gradient in the explainer's parameters, against a reference: the mean of ``--ref-reps``
stratified estimates at ``--ref`` (a large sample; its own standard error is reported).

Reports the RMSE of ``C`` (nats) and the relative RMSE of the gradient
(``sqrt(E |g - g_ref|^2) / |g_ref|``), and the decodes per estimate. Writes
``gce_estimator[_quick].json`` and ``.png``. ``benchmarks.gce_step`` uses :func:`trained_explainer`
and :func:`errors`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from benchmarks.common import DEFAULT_DATA, REPO, RESULTS, machine, require_mnist, write_json
from jcausal._src.xla import jit
from jcausal.experiments.gce_mnist import (
    GCEMnistConfig,
    classifier_probs,
    explain_digits,
    fit_classifier,
    load_mnist_classes,
)
from jcausal.gce import ExplainerSettings, conv_vae, generative, information_flow
from jcausal.models import load, save

CACHE = REPO / "benchmarks" / ".cache"
K, L = 1, 7
# an earlier slow test's recipe: C about 0.5 nats after 400 joint steps
RECIPE = dict(K=K, L=L, lam=0.05, steps=400, pretrain_steps=300, init_log_var=-4.0, n_alpha=16, n_beta=8,
              likelihood="bernoulli", batch_size=64, learning_rate=1e-3, n_flow=(16, 4), sampler="mc")
CONFIGS = [("mc", 100, 25), ("sobol", 40, 20), ("sobol", 64, 10), ("sobol", 40, 16), ("sobol", 80, 8),
           ("sobol", 64, 8), ("sobol", 128, 4), ("sobol", 48, 10), ("sobol", 32, 8), ("sobol", 16, 8),
           ("stratified", 50, 25), ("stratified", 40, 20), ("stratified", 32, 20), ("stratified", 64, 8),
           ("stratified", 25, 10)]


def trained_explainer(data_dir: Path, *, cache: Path = CACHE, quick: bool = False, progress: bool = False):
    """``(data, classifier, gen, params)``: the MNIST 3/8 classifier and a trained explainer's
    parameters (loaded from ``cache`` when there; ``quick``: a few steps only, for smoke runs)."""
    require_mnist(data_dir)
    data = load_mnist_classes(data_dir, (3, 8))
    cache.mkdir(parents=True, exist_ok=True)
    tag = "_quick" if quick else ""
    clf = fit_classifier(data, key=jax.random.key(0), epochs=1 if quick else 3,
                         checkpoint=cache / f"gce_classifier{tag}.msgpack", progress=progress)
    vae = conv_vae(K + L, rngs=nnx.Rngs(0), init_log_var=-4.0, likelihood="bernoulli")
    path = cache / f"gce_explainer{tag}.msgpack"
    if path.is_file():
        load(path, vae)
    else:
        recipe = RECIPE | (dict(steps=10, pretrain_steps=10) if quick else {})
        exp = explain_digits(data, clf, key=jax.random.key(1), config=GCEMnistConfig(**recipe),
                             progress=progress)
        nnx.update(vae, exp.params)
        save(path, vae)
    gen = generative(vae)
    return data, clf, gen, gen.params


def _estimators(gen, classify, sampler, na, nb, chunk=250):
    def C(p, cp, k):
        return information_flow(gen.decode, classify, k, K=K, L=L, n_alpha=na, n_beta=nb, params=(p, cp),
                                sampler=sampler, chunk=chunk)

    return jit(C), jit(jax.grad(C))


def _flat(g):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(g)])


def reference(gen, classify, params, cparams, *, size=(400, 50), reps=4, key=10_000):
    """Mean of ``reps`` stratified estimates at ``size``: ``(C, C_se, grad, grad_rel_se)``."""
    fC, fg = _estimators(gen, classify, "stratified", *size)
    Cs, gs = [], []
    for r in range(reps):
        k = jax.random.key(key + r)
        Cs.append(float(fC(params, cparams, k)))
        gs.append(_flat(fg(params, cparams, k)))
    Cs, gs = np.asarray(Cs), np.stack(gs)
    g = gs.mean(0)
    g_se = np.sqrt(np.sum(gs.var(0, ddof=1)) / reps) / np.linalg.norm(g)
    return float(Cs.mean()), float(Cs.std(ddof=1) / np.sqrt(reps)), g, float(g_se)


def errors(gen, classify, params, cparams, ref, configs, *, reps=16, key=0, log=print):
    """Rows ``{sampler, n_alpha, n_beta, decodes, C_mean, C_rmse, C_bias, grad_rel_rmse, seconds}``;
    ``grad_rel_rmse`` has the reference's own variance removed (the errors are independent)."""
    C_ref, _, g_ref, g_rel_se = ref
    rows = []
    for sampler, na, nb in configs:
        fC, fg = _estimators(gen, classify, sampler, na, nb)
        Cs, errs = [], []
        t0 = time.perf_counter()
        for r in range(reps):
            k = jax.random.key(key + 7919 * r)
            Cs.append(float(fC(params, cparams, k)))
            errs.append(np.sum((_flat(fg(params, cparams, k)) - g_ref) ** 2))
        Cs = np.asarray(Cs)
        row = {"sampler": sampler, "n_alpha": na, "n_beta": nb, "decodes": na * nb, "reps": reps,
               "C_mean": float(Cs.mean()), "C_bias": float(Cs.mean() - C_ref),
               "C_rmse": float(np.sqrt(np.mean((Cs - C_ref) ** 2))),
               "grad_rel_rmse": float(np.sqrt(max(np.mean(errs) / np.linalg.norm(g_ref) ** 2 - g_rel_se ** 2,
                                                    0.0))),
               "grad_rel_rmse_raw": float(np.sqrt(np.mean(errs)) / np.linalg.norm(g_ref)),
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        log(f"{sampler:>10} {na:3d} x {nb:3d} ({na * nb:5d} decodes): C RMSE {row['C_rmse']:.4f} "
            f"(bias {row['C_bias']:+.4f}), grad rel RMSE {row['grad_rel_rmse']:.3f}")
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few configs and repeats (smoke run)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--reps", type=int, default=48)
    ap.add_argument("--ref", type=int, nargs=2, default=(400, 50))
    ap.add_argument("--ref-reps", type=int, default=4)
    args = ap.parse_args(argv)
    _, clf, gen, params = trained_explainer(args.data)
    classify = classifier_probs(clf.apply)
    size, ref_reps = ((50, 10), 2) if args.quick else (tuple(args.ref), args.ref_reps)
    ref = reference(gen, classify, params, clf.params, size=size, reps=ref_reps)
    print(f"reference C {ref[0]:.4f} +- {ref[1]:.4f} nats ({size[0]} x {size[1]} stratified x {ref_reps}); "
          f"gradient relative SE {ref[3]:.3f}", flush=True)
    configs = CONFIGS[:1] + CONFIGS[5:6] if args.quick else CONFIGS
    rows = errors(gen, classify, params, clf.params, ref, configs, reps=2 if args.quick else args.reps)
    result = {"quick": args.quick, "machine": machine(), "K": K, "L": L,
              "reference": {"n_alpha": size[0], "n_beta": size[1], "reps": ref_reps, "C": ref[0],
                            "C_se": ref[1], "grad_rel_se": ref[3]},
              "classifier_val_accuracy": float(clf.val_accuracy), "rows": rows}
    stem = "gce_estimator_quick" if args.quick else "gce_estimator"
    write_json(args.out / f"{stem}.json", result)
    d = ExplainerSettings()
    figure(rows, args.out / f"{stem}.png", title=f"MNIST 3/8 explainer, C = {ref[0]:.2f} nats",
           default=(d.sampler, d.n_alpha, d.n_beta))
    return result


def figure(rows, path: Path, *, title: str = "", default=None) -> None:
    """RMSE of C and of its gradient against decodes per estimate, one marker per sampler; the
    paper's errors (``mc`` at 100 x 25) as dashed lines, ``default`` ``(sampler, n_alpha, n_beta)``
    ringed."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    from jcausal._src.io import atomic_savefig

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    paper = next((r for r in rows if (r["sampler"], r["n_alpha"], r["n_beta"]) == ("mc", 100, 25)), None)
    for sampler, marker in (("mc", "s"), ("stratified", "o"), ("sobol", "^")):
        rs = [r for r in rows if r["sampler"] == sampler]
        for ax, key in zip(axes, ("C_rmse", "grad_rel_rmse")):
            ax.loglog([r["decodes"] for r in rs], [r[key] for r in rs], marker, label=sampler, alpha=0.85)
            for r in rs:
                if (sampler, r["n_alpha"], r["n_beta"]) == default:
                    ax.loglog([r["decodes"]], [r[key]], "o", ms=14, mfc="none", mec="k",
                              label=f"default ({sampler} {r['n_alpha']}x{r['n_beta']})")
                ax.annotate(f"{r['n_alpha']}x{r['n_beta']}", (r["decodes"], r[key]), fontsize=7,
                            xytext=(4, -3 if sampler == "sobol" else 3), textcoords="offset points")
    for ax, key in zip(axes, ("C_rmse", "grad_rel_rmse")):
        if paper:
            ax.axhline(paper[key], color="tab:blue", ls="--", lw=0.8, label="the paper's error")
        ticks = sorted({r["decodes"] for r in rows} & {128, 256, 512, 640, 800, 1250, 2500})
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(t) for t in ticks], fontsize=8)
        ax.set_xlabel("decodes per estimate")
    axes[0].set_ylabel("RMSE of C (nats)")
    axes[1].set_ylabel("relative RMSE of grad C")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)

if __name__ == "__main__":
    main()
