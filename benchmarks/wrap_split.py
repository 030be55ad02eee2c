"""Eqn 2 on wrapped models: the automatically found Split against the plain function and the
hand-written ``split_functional``; Captum's Integrated Gradients against jcausal's on the copy.

    python -m benchmarks.wrap_split [--quick] [--out benchmarks/results] [--repeats 3]

The GCE paper's CNN (Table 1: conv32 3x3 - ReLU - conv64 3x3 - ReLU - maxpool 2x2 - fc128 - ReLU -
fc10, softmax outputs) written in Flax NNX (the project's own ``GCECNN``), Flax Linen, Equinox,
Keras (JAX backend) and PyTorch, each wrapped with one ``jcausal.wrap`` call (untrained weights:
the cost does not depend on them). Eqn 2 over ``rows`` 28x28 rows (uniform pixels), ``F`` pixels x
``A`` alphas, all 10 outputs: time per (feature, alpha) point after warm-up (median of
``repeats``) for the wrapped model's automatic split, for its plain ``apply`` (the whole model per
row, feature and alpha) and, on the NNX model, for the hand-written ``split_functional``; and the
largest difference between the split and plain results.

Captum (when installed, the ``bench`` extra): ``IntegratedGradients(model).attribute(x,
target=1, n_steps=S, method="riemann_trapezoid")`` on the torch CNN for ``n_ig`` images, against
jcausal's ``integrated_gradients`` on the wrapped copy with the same ``S`` nodes (``steps=S - 1``),
for output 1 only (``head=`` selects it) and for all 10 outputs; Captum's trapezoid weights sum to
``(S - 1)/S``, so its attributions times ``S/(S - 1)`` are compared with jcausal's.

Writes ``wrap_split[_quick].json`` and ``wrap_split[_quick].png``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jcausal  # noqa: E402
from benchmarks.common import RESULTS, machine, timed, write_json  # noqa: E402
from jcausal.ace import input_stats, interventional_expectation  # noqa: E402


def _nnx():
    from flax import nnx

    from jcausal.models import GCECNN

    return GCECNN(10, rngs=nnx.Rngs(0)), "hwc"


def _linen():
    from flax import linen as nn

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x))
            x = nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2)).reshape(-1)
            return nn.Dense(10)(nn.relu(nn.Dense(128)(x)))

    m = CNN()
    return (m, m.init(jax.random.key(0), jnp.zeros((28, 28, 1)))), "hwc"


def _equinox():
    import equinox as eqx

    k = jax.random.split(jax.random.key(0), 4)
    return eqx.nn.Sequential(
        [
            eqx.nn.Conv2d(1, 32, 3, key=k[0]),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Conv2d(32, 64, 3, key=k[1]),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.MaxPool2d(2, 2),
            eqx.nn.Lambda(jnp.ravel),
            eqx.nn.Linear(64 * 12 * 12, 128, key=k[2]),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Linear(128, 10, key=k[3]),
        ]
    ), "chw"


def _keras():
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(32, 3, activation="relu"),
            L.Conv2D(64, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.Dense(10),
        ]
    ), "hwc"


def _torch():
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 12 * 12, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    ), "chw"


BUILDERS = {"nnx": _nnx, "torch": _torch, "keras": _keras, "linen": _linen, "equinox": _equinox}


def _wrap(name, X):
    model, layout = BUILDERS[name]()
    ex = X[0].reshape((28, 28, 1) if layout == "hwc" else (1, 28, 28))
    if name == "linen":
        model, variables = model
        return jcausal.wrap(model, ex, params=variables, head=jax.nn.softmax), model
    return jcausal.wrap(model, ex, head=jax.nn.softmax), model


def _eqn2(f, params, stats, alphas, feats, X):
    return interventional_expectation(f, stats, alphas, params=params, features=feats, data=X)


def captum_comparison(X, steps, repeats) -> dict:
    try:
        import torch
        from captum.attr import IntegratedGradients
    except ImportError as err:
        return {"skipped": f"captum not installed ({err}); pip install -e '.[bench]'"}
    from jcausal.comparisons import integrated_gradients

    model, _ = _torch()
    model.eval()
    imgs = X.reshape(-1, 1, 28, 28)
    xt = torch.from_numpy(imgs)
    ig = IntegratedGradients(model)

    def captum():
        return ig.attribute(xt, baselines=0.0, target=1, n_steps=steps, method="riemann_trapezoid")

    captum()
    runs = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        ref = captum()
        runs.append(time.perf_counter() - t0)
    t_captum = float(np.median(runs))
    one = jcausal.wrap(model, imgs[0], head=lambda y: y[1:2])
    every = jcausal.wrap(model, imgs[0])
    # one image at a time, 10 quadrature nodes at once: all 50 nodes x 16 images x 10 outputs of
    # reverse-mode intermediates at once asked XLA for 26 GB
    run_one = jax.jit(
        lambda X: jax.lax.map(lambda x: integrated_gradients(one, x, steps=steps - 1, batch_size=10), X)
    )
    run_all = jax.jit(
        lambda X: jax.lax.map(lambda x: integrated_gradients(every, x, steps=steps - 1, batch_size=10), X)
    )
    a1, t_one, c_one = timed(lambda: run_one(imgs), repeats)
    a10, t_all, c_all = timed(lambda: run_all(imgs), 1)  # 10x the work: one timed call
    scaled = ref.detach().numpy() * steps / (steps - 1)
    err = float(np.max(np.abs(scaled - np.asarray(a1)[:, 0])) / np.max(np.abs(scaled)))
    err10 = float(np.max(np.abs(np.asarray(a10)[:, 1] - np.asarray(a1)[:, 0])))
    return {
        "images": int(imgs.shape[0]),
        "n_steps": steps,
        "captum_seconds": t_captum,
        "jcausal_one_output_seconds": t_one,
        "jcausal_one_output_compile_seconds": c_one,
        "jcausal_all_10_outputs_seconds": t_all,
        "jcausal_all_compile_seconds": c_all,
        "rel_error_captum_scaled_vs_jcausal": err,
        "max_abs_diff_output1_all_vs_one": err10,
        "captum_version": __import__("captum").__version__,
        "torch_version": torch.__version__,
    }


MNIST_MLP = (784, 256, 128, 64, 32, 10)


def mlp_rows(X, stats, alphas, feats, repeats) -> list[dict]:
    """The same measurement on the MNIST MLP 784-256-128-64-32-10 (ReLU), where the first layer is
    most of the work: NNX (``jcausal.models.MLP``, with its hand-written split) and PyTorch."""
    import torch
    from flax import nnx

    from jcausal.models import MLP, split_functional

    points = len(feats) * alphas.shape[0]
    torch.manual_seed(0)
    layers = []
    for a, b in zip(MNIST_MLP[:-1], MNIST_MLP[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    models = {"nnx": MLP(MNIST_MLP, rngs=nnx.Rngs(0)), "torch": torch.nn.Sequential(*layers[:-1])}
    out = []
    for name, model in models.items():
        w = jcausal.wrap(model, X[0], head=jax.nn.softmax)
        E_s, t_s, _ = timed(lambda w=w: _eqn2(w, None, stats, alphas, feats, X), repeats)
        E_p, t_p, _ = timed(lambda w=w: _eqn2(w.apply, w.params, stats, alphas, feats, X), repeats)
        row = {
            "framework": name,
            "model": "MLP 784-256-128-64-32-10",
            "split_found": w.split is not None,
            "ms_per_point_split": 1e3 * t_s / points,
            "ms_per_point_plain": 1e3 * t_p / points,
            "split_speedup_over_plain": t_p / t_s,
            "max_abs_diff_split_vs_plain": float(jnp.max(jnp.abs(E_s - E_p))),
        }
        if name == "nnx":
            split, sparams = split_functional(model)
            hand = split.then(jax.nn.softmax)
            E_h, t_h, _ = timed(lambda h=hand, p=sparams: _eqn2(h, p, stats, alphas, feats, X), repeats)
            row["ms_per_point_hand_split"] = 1e3 * t_h / points
            row["max_abs_diff_hand_vs_split"] = float(jnp.max(jnp.abs(E_h - E_s)))
        out.append(row)
        print(row, flush=True)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rows and points (smoke run)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--frameworks", default=",".join(BUILDERS))
    ap.add_argument("--ig-images", type=int, default=16, help="images for the Captum comparison")
    ap.add_argument("--mlp-only", action="store_true", help="only the MLP rows (wrap_split_mlp.json)")
    ap.add_argument("--captum-only", action="store_true", help="keep the eqn-2 rows already written")
    args = ap.parse_args(argv)
    rows = 64 if args.quick else args.rows
    X = np.random.default_rng(0).uniform(size=(rows, 784)).astype(np.float32)
    stats = input_stats(X)
    feats = [300, 400] if not args.quick else [300]
    alphas = jnp.asarray([0.0, 0.5, 1.0] if not args.quick else [0.0, 1.0])
    points = len(feats) * alphas.shape[0]
    if args.captum_only:  # add the Captum comparison to the eqn-2 results already written
        path = args.out / f"wrap_split{'_quick' if args.quick else ''}.json"
        import json

        out_rows = json.loads(path.read_text())["results"]
    if args.mlp_only:
        res = {"machine": machine(), "rows": rows, "results": mlp_rows(X, stats, alphas, feats, args.repeats)}
        write_json(args.out / f"wrap_split_mlp{'_quick' if args.quick else ''}.json", res)
        return res
    out_rows = out_rows if args.captum_only else []
    for name in [] if args.captum_only else args.frameworks.split(","):
        t0 = time.perf_counter()
        w, model = _wrap(name, X)
        wrap_s = time.perf_counter() - t0
        E_split, t_split, c_split = timed(lambda w=w: _eqn2(w, None, stats, alphas, feats, X), args.repeats)
        E_plain, t_plain, c_plain = timed(
            lambda w=w: _eqn2(w.apply, w.params, stats, alphas, feats, X), args.repeats
        )
        row = {
            "framework": name,
            "split_found": w.split is not None,
            "wrap_seconds": wrap_s,
            "ms_per_point_split": 1e3 * t_split / points,
            "ms_per_point_plain": 1e3 * t_plain / points,
            "compile_seconds_split": c_split,
            "compile_seconds_plain": c_plain,
            "split_speedup_over_plain": t_plain / t_split,
            "max_abs_diff_split_vs_plain": float(jnp.max(jnp.abs(E_split - E_plain))),
        }
        if name == "nnx":
            from jcausal.models import split_functional

            split, sparams = split_functional(model)
            hand = split.then(jax.nn.softmax)
            E_hand, t_hand, _ = timed(
                lambda h=hand, p=sparams: _eqn2(h, p, stats, alphas, feats, X), args.repeats
            )
            row["ms_per_point_hand_split"] = 1e3 * t_hand / points
            row["max_abs_diff_hand_vs_split"] = float(jnp.max(jnp.abs(E_hand - E_split)))
        out_rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        partial = {"quick": args.quick, "partial": True, "rows": rows, "results": out_rows}
        write_json(args.out / f"wrap_split{'_quick' if args.quick else ''}.json", partial)
    hand_ms = next((r["ms_per_point_hand_split"] for r in out_rows if "ms_per_point_hand_split" in r), None)
    for r in out_rows:
        if hand_ms:
            r["split_time_over_hand"] = r["ms_per_point_split"] / hand_ms
    captum = captum_comparison(X[: 4 if args.quick else 32], 8 if args.quick else 50, args.repeats)
    print(captum, flush=True)
    result = {
        "quick": args.quick,
        "machine": machine(),
        "rows": rows,
        "features": feats,
        "alphas": np.asarray(alphas).tolist(),
        "points": points,
        "results": out_rows,
        "captum": captum,
    }
    suffix = "_quick" if args.quick else ""
    write_json(args.out / f"wrap_split{suffix}.json", result)
    _plot(out_rows, hand_ms, args.out / f"wrap_split{suffix}.png", rows)
    return result


def _plot(rows, hand_ms, path, n):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["ms_per_point_split"] for r in rows], 0.4, label="automatic split (w)")
    ax.bar(x + 0.2, [r["ms_per_point_plain"] for r in rows], 0.4, label="plain apply(params, x)")
    if hand_ms:
        ax.axhline(hand_ms, color="k", ls="--", lw=1, label="hand-written split_functional (NNX GCECNN)")
    ax.set_xticks(x, [r["framework"] for r in rows])
    ax.set_ylabel("ms per (feature, alpha) point")
    ax.set_title(f"Eqn 2 on the GCE CNN, {n} rows, wrapped from each framework")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
