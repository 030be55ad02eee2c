"""TRACER on the MNIST AlexNet: local analysis, global view, compression study (the paper's Table 1)
and a deletion/insertion faithfulness table comparing TRACER, ACE local saliency, Integrated
Gradients and gradient saliency.

ImageNet/ResNet-50 are not available offline: the paper's MNIST AlexNet is trained here on 80% of
the MNIST *test* set (the only MNIST file shipped) and evaluated on the other 20%.

    python -m benchmarks.tracer_mnist [--quick] [--data DIR] [--out DIR]

Writes ``tracer_mnist[_quick].json`` and PNG figures to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jcausal._src.io import atomic_write_bytes
from jcausal.comparisons import gradient_saliency, integrated_gradients
from jcausal.experiments.tracer_compression import SpecNet, alexnet_spec, compress_spec, model_stats
from jcausal.models import AlexNetSmall, functional, train
from jcausal.tracer import (
    deletion_insertion,
    global_view,
    layer_outputs,
    patch_index_sets,
    trace,
)

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"
LAYERS = ["convs.*", "fcs.*"]  # the paper's eight activation outputs (dropout calls left out)


def load_data(data_dir, seed: int = 0):
    from jcausal.data import load_mnist

    d = load_mnist(data_dir, val_fraction=0.2, seed=seed)
    return d.x_train[..., None], d.y_train, d.x_val[..., None], d.y_val


def train_alexnet(x, y, *, epochs: int = 2, seed: int = 0, progress: bool = False):
    model = AlexNetSmall(10, rngs=nnx.Rngs(seed))
    train(model, x, y, key=jax.random.key(seed), epochs=epochs, batch_size=64, learning_rate=1e-3,
          progress=progress)
    return model


# ----------------------------------------------------------------------------- compression


def compression_table(model, gv, x_tr, y_tr, x_te, y_te, *, epochs: int = 2, max_models: int = 3,
                      seed: int = 0, progress: bool = False):
    """Rows of Table 1: the original and one compressed model per distinct node count (most common
    mechanism of that count, fewest nodes first), each retrained with ``jcausal.models.train``."""
    rows = [{"model": "AlexNetSmall", "coverage": 100.0, "nodes": None, "spec": alexnet_spec()._asdict(),
             **model_stats(model, x_te, y_te)}]
    picked, seen_specs = [], set()
    for k in sorted(gv.coverage_by_nodes):
        mechs = [m for m in gv.mechanisms if m.num_nodes == k]
        spec = compress_spec(alexnet_spec(), mechs[0].groups)
        if spec == alexnet_spec() or spec in seen_specs:
            continue
        seen_specs.add(spec)
        picked.append((k, mechs[0], spec))
    for i, (k, mech, spec) in enumerate(picked[:max_models]):
        m = SpecNet(spec, rngs=nnx.Rngs(seed + 1 + i))
        t0 = time.perf_counter()
        train(m, x_tr, y_tr, key=jax.random.key(seed + 1 + i), epochs=epochs, batch_size=64,
              learning_rate=1e-3, progress=progress)
        rows.append({"model": f"C{i + 1}", "coverage": gv.coverage_by_nodes[k], "nodes": k,
                     "mechanism": [list(g) for g in mech.groups], "spec": spec._asdict(),
                     "train_s": time.perf_counter() - t0, **model_stats(m, x_te, y_te)})
    return rows


# ----------------------------------------------------------------------------- faithfulness


def ace_local_saliency(prob, params, x, rows, target, sets, alphas):
    """ACE local saliency (ACE paper, eqn 2, evaluated at the input's own values), per index set:
    ``E[y_c | do(x_I = x_I)] - mean_a E[y_c | do(x_I = a)]`` with the expectation over ``rows``
    (data) and ``a`` on a uniform grid of ``alphas`` in [0, 1] (the baseline of the ACE paper is the
    average interventional expectation over the domain). Computed here, in the benchmark layer: the
    tracer package never imports ``jcausal.ace``. Returns ``(K,)`` per set."""

    def expect(vals, I):  # vals: (m,) values for the m features of I, the same in every row
        xs = rows.reshape(rows.shape[0], -1).at[:, I].set(vals[None, :]).reshape(rows.shape)
        return jnp.mean(jax.vmap(lambda r: prob(params, r))(xs)[:, target])

    def one(I):
        own = expect(x.reshape(-1)[I], I)
        base = jnp.mean(jax.vmap(lambda a: expect(jnp.full(I.shape, a, x.dtype), I))(alphas))
        return own - base

    return jax.lax.map(one, sets)


def _spread(per_set, sets, d):
    m = np.zeros((len(sets), d))
    for k, s in enumerate(np.asarray(sets)):
        m[k, s] = 1.0
    cnt = m.sum(0)
    return np.where(cnt > 0, np.asarray(per_set, np.float64) @ m / np.maximum(cnt, 1), 0.0)


def faithfulness_table(model, x_te, y_te, x_tr, *, n: int = 20, rows: int = 16, steps: int = 28,
                       seed: int = 0, progress: bool = False):
    """Mean deletion / insertion AUC over ``n`` correctly classified test digits for TRACER
    (decision-node contributions and the mean over nodes), ACE local saliency (4x4 patches), Integrated
    Gradients (32 steps, black baseline) and gradient saliency ``|d p_c / d x|``."""
    from tqdm.auto import tqdm

    apply, params = functional(model)

    def prob(p, x):
        return jax.nn.softmax(apply(p, x))

    pred = np.asarray(jnp.argmax(jax.jit(jax.vmap(apply, in_axes=(None, 0)))(params, x_te[:512]), -1))
    ok = np.flatnonzero(pred == y_te[:512])
    pick = np.random.default_rng(seed).choice(ok, min(n, len(ok)), replace=False)
    ref = jnp.asarray(x_tr[np.random.default_rng(seed + 1).choice(len(x_tr), rows, replace=False)])
    lo = layer_outputs(model, x_te[0], layers=LAYERS)
    ace_sets = jnp.asarray(patch_index_sets((28, 28, 1), 4, 4))
    alphas = jnp.linspace(0.0, 1.0, 5, dtype=jnp.float32)
    ace_fn = jax.jit(lambda p, x, t: ace_local_saliency(prob, p, x, ref, t, ace_sets, alphas))
    ig_fn = jax.jit(lambda p, x: integrated_gradients(prob, x, params=p, steps=32))
    gs_fn = jax.jit(lambda p, x: gradient_saliency(prob, x, params=p))
    di = jax.jit(lambda p, x, s, t: deletion_insertion(lambda z: prob(p, z), x, s, t, steps=steps))
    names = ["TRACER (decision node)", "TRACER (mean of nodes)", "ACE local saliency (4x4 patches)",
             "Integrated Gradients", "Gradient saliency"]
    scores = {k: {"deletion": [], "insertion": [], "seconds": []} for k in names}
    for i in tqdm(pick, disable=not progress, desc="faithfulness", leave=False):
        x, t = jnp.asarray(x_te[i]), int(y_te[i])
        maps = {}
        t0 = time.perf_counter()
        ex = trace(lo, x, patch=4, stride=2, target=t)
        dt = time.perf_counter() - t0
        maps[names[0]] = (ex.contributions[-1].features, dt)
        allc = np.stack([c.features / (np.abs(c.features).max() + 1e-12) for c in ex.contributions])
        maps[names[1]] = (allc.mean(0), dt)
        t0 = time.perf_counter()
        a = np.asarray(ace_fn(params, x, t))
        maps[names[2]] = (_spread(a, ace_sets, 784), time.perf_counter() - t0)
        t0 = time.perf_counter()
        maps[names[3]] = (np.asarray(ig_fn(params, x))[t], time.perf_counter() - t0)
        t0 = time.perf_counter()
        maps[names[4]] = (np.abs(np.asarray(gs_fn(params, x))[t]), time.perf_counter() - t0)
        for k, (s, sec) in maps.items():
            f = di(params, x, jnp.asarray(np.asarray(s).reshape(x.shape), jnp.float32), t)
            scores[k]["deletion"].append(float(f.deletion_auc))
            scores[k]["insertion"].append(float(f.insertion_auc))
            scores[k]["seconds"].append(sec)
    table = []
    for k in names:
        s = scores[k]
        table.append({"method": k, "deletion_auc": float(np.mean(s["deletion"])),
                      "deletion_sem": float(np.std(s["deletion"]) / np.sqrt(len(s["deletion"]))),
                      "insertion_auc": float(np.mean(s["insertion"])),
                      "insertion_sem": float(np.std(s["insertion"]) / np.sqrt(len(s["insertion"]))),
                      "seconds_per_digit": float(np.median(s["seconds"][1:] or s["seconds"]))})
    return table, [int(i) for i in pick]


# ----------------------------------------------------------------------------- main


def run(model, data, out: Path, *, name: str, per_class: int, n_faith: int, epochs: int,
        max_models: int = 3, progress: bool = False) -> dict:
    x_tr, y_tr, x_te, y_te = data
    out.mkdir(parents=True, exist_ok=True)
    lo = layer_outputs(model, x_te[0], layers=LAYERS)
    t0 = time.perf_counter()
    ex = trace(lo, x_te[0], patch=4, stride=2)
    local_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex = trace(lo, x_te[0], patch=4, stride=2)
    local_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    gv = global_view(lo, x_te, y_te, per_class=per_class, patch=4, progress=progress)
    global_s = time.perf_counter() - t0
    comp = compression_table(model, gv, x_tr, y_tr, x_te, y_te, epochs=epochs, max_models=max_models,
                             progress=progress)
    faith, picked = faithfulness_table(model, x_te, y_te, x_tr, n=n_faith, progress=progress)
    result = {"machine": {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__},
              "local": {"seconds_cold": local_cold, "seconds_warm": local_warm, **ex.to_dict()},
              "global": {"seconds": global_s, **gv.to_dict()}, "compression": comp,
              "faithfulness": {"digits": picked, "rows": faith}}
    atomic_write_bytes(out / f"{name}.json", json.dumps(result, indent=2).encode())
    try:
        _figures(ex, x_te[0], gv, comp, out, name)
    except ImportError:
        pass
    return result


def _figures(ex, x, gv, comp, out: Path, name: str) -> None:
    from jcausal.plot.tracer import plot_causal_graph, plot_cka, plot_contributions, plot_coverage

    for tag, fig in [("cka", plot_cka(ex.graph)), ("graph", plot_causal_graph(ex.graph)),
                     ("contributions", plot_contributions(ex, np.asarray(x))),
                     ("coverage", plot_coverage(gv))]:
        fig.savefig(out / f"{name}_{tag}.png", dpi=110)
        import matplotlib.pyplot as plt

        plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--quick", action="store_true", help="small settings (the test suite)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--per-class", type=int, default=None)
    p.add_argument("--n-faith", type=int, default=None)
    args = p.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 3)
    per_class = args.per_class or (20 if args.quick else 50)
    n_faith = args.n_faith or (5 if args.quick else 50)
    data = load_data(args.data)
    model = train_alexnet(data[0], data[1], epochs=epochs, progress=not args.quick)
    name = "tracer_mnist_quick" if args.quick else "tracer_mnist"
    res = run(model, data, Path(args.out), name=name, per_class=per_class, n_faith=n_faith, epochs=epochs,
              progress=not args.quick)
    _print(res)
    return 0


def _print(res) -> None:
    print("model  coverage  nodes  params(M)  size(MB)  FLOPs(M)  ms/sample  accuracy(%)")
    for r in res["compression"]:
        print(f"{r['model']:12s} {r['coverage']:6.1f} {str(r['nodes']):>5s} {r['params_M']:9.3f} "
              f"{r['size_MB']:8.3f} {r['flops_M']:9.2f} {r['ms_per_sample']:6.3f}±{r['ms_std']:.3f} "
              f"{r['accuracy']:8.2f}")
    print("\nmethod                              deletion AUC (lower)  insertion AUC (higher)  s/digit")
    for r in res["faithfulness"]["rows"]:
        print(f"{r['method']:36s} {r['deletion_auc']:.3f}±{r['deletion_sem']:.3f}"
              f"           {r['insertion_auc']:.3f}±{r['insertion_sem']:.3f}          "
              f"{r['seconds_per_digit']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
