"""One GCE training step, jcausal (JAX) vs PyTorch, on identical weights and data.

    python -m benchmarks.gce_step [--quick] [--data DIR] [--out benchmarks/results] [--repeats 3]

The paper's MNIST 3/8 setting: Table 1 CNN (frozen; trained one epoch on the 3/8 digits of the
MNIST test files when present), Table 2 VAE with K = 1, L = 7, lambda = 0.05, N_alpha = 100,
N_beta = 25, batch 64, Adam 5e-4. For each implementation: median seconds per step after warm-up
(compile time reported separately), and the objective ``-(C + lam D)``, ``C`` and ``D`` at the
initial weights, averaged over ``repeats`` independent Monte Carlo draws (mean and standard
error), so speed is compared at the same objective value. Peers (``benchmarks/peers/gce_torch.py``):
the authors' loop over alpha draws, and all latents as one batch. Also where jcausal's step
spends its time (data term, causal term, forward only).

Writes ``gce_step[_quick].json`` and ``gce_step[_quick].png``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.common import DEFAULT_DATA, RESULTS, machine, write_json
from jcausal._src.xla import jit
from jcausal.experiments.gce_mnist import classifier_probs, fit_classifier, load_mnist_classes
from jcausal.gce import build_step, conv_vae, generative, information_flow
from jcausal.models import GCECNN, functional

# latents per decode/classify batch in jcausal's step (explain_digits' default; the same objective)
CHUNK = 250


def _median_time(fn, repeats):
    runs = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs


def _mean_se(values):
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def _peaks(repeats: int) -> dict:
    """XLA:CPU's throughput (GFLOP/s) on this machine for the step's largest convolution (the
    classifier's conv2, 26x26x32 -> 24x24x64, 3x3, a batch of 256) and for a 2048^2 matrix product:
    with the step's FLOP count, the time the step would take if everything ran at that rate."""
    x, k = jnp.ones((256, 26, 26, 32)), jnp.ones((3, 3, 32, 64))
    conv = jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")))
    a = jnp.ones((2048, 2048))
    dot = jit(lambda a, b: a @ b)
    out = {}
    for name, f, args, flops in (("conv", conv, (x, k), 2 * 256 * 24 * 24 * 64 * 9 * 32),
                                 ("dot", dot, (a, a), 2 * 2048 ** 3)):
        jax.block_until_ready(f(*args))
        t, _ = _median_time(lambda f=f, args=args: jax.block_until_ready(f(*args)), max(repeats, 5))
        out[name] = flops / t / 1e9
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small N_alpha, N_beta and repeats (smoke run)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-alpha", type=int, default=100)
    ap.add_argument("--n-beta", type=int, default=25)
    ap.add_argument("--n-eval", type=int, default=8, help="Monte Carlo draws of the objective")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    na, nb = (10, 5) if args.quick else (args.n_alpha, args.n_beta)
    K, L, lam, bs, lr = 1, 7, 0.05, 64, 5e-4
    reps = 1 if args.quick else args.repeats
    n_eval = 4 if args.quick else args.n_eval

    have_mnist = any((args.data / f"t10k-images-idx3-ubyte{e}").is_file() for e in ("", ".gz"))
    if have_mnist:
        data = load_mnist_classes(args.data, (3, 8))
        clf = fit_classifier(data, key=jax.random.key(0), epochs=1, progress=False)
        apply, cparams, clf_acc = clf.apply, clf.params, clf.val_accuracy
        X = np.asarray(data.x_train[:bs])
    else:
        apply, cparams = functional(GCECNN(2, rngs=nnx.Rngs(0)))
        clf_acc = None
        X = np.asarray(jax.random.uniform(jax.random.key(0), (bs, 28, 28, 1)))
    classify = classifier_probs(apply)
    vae = conv_vae(K + L, rngs=nnx.Rngs(1))
    gen = generative(vae)
    params0 = gen.params
    result = {"quick": args.quick, "machine": machine(), "settings": {
        "K": K, "L": L, "lam": lam, "batch": bs, "n_alpha": na, "n_beta": nb, "learning_rate": lr,
        "repeats": reps, "chunk": CHUNK, "classifier_val_accuracy": clf_acc, "mnist": have_mnist}, "rows": []}

    # --- jcausal -------------------------------------------------------------------------------
    tx = optax.adam(lr)
    step = build_step(gen, classify, tx, K=K, L=L, n_alpha=na, n_beta=nb, chunk=CHUNK)
    data_j, idx, lam_j = jnp.asarray(X), jnp.arange(bs), jnp.asarray(lam, jnp.float32)
    with jax.numpy_dtype_promotion("standard"):
        opt = tx.init(params0)
    state = {"p": params0, "o": opt, "t": 0}
    # compiled once, ahead of time: timed here, and its arithmetic as XLA counts it (the same
    # networks: the peers do the same work)
    t0 = time.perf_counter()
    compiled = step.lower(params0, opt, cparams, data_j, idx, lam_j, jax.random.key(0)).compile()
    compile_seconds = time.perf_counter() - t0

    def jstep():
        state["t"] += 1
        p, o, info = compiled(state["p"], state["o"], cparams, data_j, idx, lam_j, jax.random.key(state["t"]))
        jax.block_until_ready(p)
        state["p"], state["o"] = p, o
        return info

    jstep()  # warm-up
    med, runs = _median_time(jstep, reps)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    step_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    result["step_gflop"] = step_flops / 1e9
    result["xla_cpu_peak_gflop_per_second"] = _peaks(reps)

    def parts(p, key):
        k_c, k_d = jax.random.split(key)
        C = information_flow(gen.decode, classify, k_c, K=K, L=L, n_alpha=na, n_beta=nb,
                             params=(p, cparams), check=False, chunk=CHUNK)
        D = gen.fidelity(p, data_j, k_d)
        return -(C + lam * D), C, D

    ev = jit(parts)
    vals = [jax.tree.map(float, ev(params0, jax.random.key(1000 + r))) for r in range(n_eval)]
    row = {"impl": "jcausal", "seconds_per_step": med, "runs": runs, "compile_seconds": compile_seconds,
           "gflop_per_second": step_flops / 1e9 / med}
    for j, name in enumerate(("objective", "C", "D")):
        row[name], row[name + "_se"] = _mean_se([v[j] for v in vals])
    result["rows"].append(row)
    print(f"jcausal: {med:.3f} s/step (compile {row['compile_seconds']:.1f} s), objective "
          f"{row['objective']:.4f} +- {row['objective_se']:.4f}", flush=True)

    # where the time goes: data term alone, causal term alone, forward only
    gd = jit(jax.grad(lambda p, k: gen.fidelity(p, data_j, k)))
    gc = jit(jax.grad(lambda p, k: parts(p, k)[1]))
    fc = jit(lambda p, k: parts(p, k)[1])
    breakdown = {}
    for name, f in (("grad_D_batch", gd), ("grad_C", gc), ("forward_C", fc)):
        jax.block_until_ready(f(params0, jax.random.key(0)))
        breakdown[name], _ = _median_time(lambda f=f: jax.block_until_ready(f(params0, jax.random.key(1))),
                                          reps)
    result["jcausal_breakdown_seconds"] = breakdown
    print("  breakdown", {k: round(v, 3) for k, v in breakdown.items()}, flush=True)

    # --- PyTorch peers -------------------------------------------------------------------------
    if not args.no_torch:
        try:
            import torch

            from benchmarks.peers.gce_torch import Peer
        except ImportError as err:
            result["torch_error"] = str(err)
            print(f"PyTorch peer skipped: {err}")
        else:
            torch.manual_seed(0)
            cp_np = nnx.to_pure_dict(cparams)
            vp_np = nnx.to_pure_dict(params0)
            xt = torch.from_numpy(np.ascontiguousarray(X.transpose(0, 3, 1, 2)))
            # the converted networks compute the same functions
            peer = Peer(cp_np, vp_np, K=K, L=L, lam=lam, n_alpha=na, n_beta=nb, lr=lr)
            z = np.array(jax.random.normal(jax.random.key(5), (8, K + L)))
            with torch.no_grad():
                xd_t = peer.vae.decode(torch.from_numpy(z)).numpy().transpose(0, 2, 3, 1)
                p_t = peer.clf(xt[:8]).numpy()
            xd_j = np.asarray(jax.vmap(lambda zz: gen.decode(params0, zz))(jnp.asarray(z)))
            p_j = np.asarray(jax.vmap(lambda x: classify(cparams, x))(data_j[:8]))
            mu_j = np.asarray(jax.vmap(lambda x: gen.encode(params0, x)[0])(data_j[:8]))
            with torch.no_grad():
                mu_t = peer.vae.encode(xt[:8])[0].numpy()
            result["torch_vs_jax_max_abs"] = {"decoder": float(np.abs(xd_t - xd_j).max()),
                                              "encoder_mean": float(np.abs(mu_t - mu_j).max()),
                                              "classifier": float(np.abs(p_t - p_j).max())}
            result["torch_threads"] = torch.get_num_threads()
            for strategy in ("authors", "batched"):
                peer = Peer(cp_np, vp_np, K=K, L=L, lam=lam, n_alpha=na, n_beta=nb, lr=lr,
                            strategy=strategy)
                vals = [peer.evaluate(xt) for _ in range(n_eval)]
                peer.step(xt)  # warm-up
                med_t, runs_t = _median_time(lambda peer=peer: peer.step(xt), reps)
                row = {"impl": f"torch_{strategy}", "seconds_per_step": med_t, "runs": runs_t,
                       "gflop_per_second": step_flops / 1e9 / med_t}
                for j, name in enumerate(("objective", "C", "D")):
                    row[name], row[name + "_se"] = _mean_se([v[j] for v in vals])
                result["rows"].append(row)
                print(f"torch ({strategy}): {med_t:.3f} s/step, objective {row['objective']:.4f} +- "
                      f"{row['objective_se']:.4f}", flush=True)
    jrow = result["rows"][0]
    for row in result["rows"][1:]:
        row["jcausal_speedup"] = row["seconds_per_step"] / jrow["seconds_per_step"]
        diff = row["objective"] - jrow["objective"]
        row["objective_diff_in_se"] = diff / float(np.hypot(row["objective_se"], jrow["objective_se"]))
    stem = "gce_step_quick" if args.quick else "gce_step"
    write_json(args.out / f"{stem}.json", result)
    _figure(result, args.out / f"{stem}.png")
    return result


def _figure(result, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    from jcausal._src.io import atomic_write_bytes

    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    names = [r["impl"] for r in rows]
    colors = ["tab:green"] + ["tab:gray"] * (len(rows) - 1)
    axes[0].bar(names, [r["seconds_per_step"] for r in rows], color=colors)
    axes[0].set_ylabel("seconds per step (median)")
    s = result["settings"]
    axes[0].set_title(f"GCE step, N_alpha={s['n_alpha']}, N_beta={s['n_beta']}, batch {s['batch']}")
    axes[1].errorbar(names, [r["objective"] for r in rows], yerr=[2 * r["objective_se"] for r in rows],
                     fmt="o", capsize=4)
    axes[1].set_ylabel("-(C + λD) at the initial weights (±2 SE)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    main()
