"""Actionable counterfactuals (issue 25): jcausal's counterfactual GAN with sparse decoding,
immutable features, ranges and several counterfactuals per input, against DiCE (random and genetic).

The task of the issue's table: the breast-cancer MLP (30, 64, 32, 2) of ``jcausal tracer
counterfactual tabular`` (seed 0, 200 epochs, lr 3e-3), min-max scaled data, the GAN trained on the
training rows the MLP assigns with probability >= 0.99 (latent 8, 1500 steps, lambda 0.9, batch 64),
the first 100 test rows, each asked for the other class. Every method's counterfactuals are checked
with the same classifier; distances are Euclidean in scaled units; a feature counts as changed when
it differs from the input by more than 1e-6 (``features_changed``; ``features_changed_1e-3``: by more
than 1e-3, which forgives DiCE's rounding of values it did not change).

Timing: jcausal's per-counterfactual time is one ``counterfactuals(...)`` call over all rows after a
warm-up (median of ``--repeats``; the first call, compilation included, is reported too); GAN
training is reported separately. DiCE's is the sum of one ``generate_counterfactuals`` call per row
(a row DiCE raises on counts as "not found"; the errors are counted in the results).

    python -m benchmarks.counterfactual_dice [--quick] [--no-dice] [--out DIR]

Writes ``counterfactual_dice[_quick].json`` and ``.png`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import random
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import RESULTS, machine, write_json
from jcausal.data import train_test_split
from jcausal.models import MLP, Loop, train
from jcausal.tracer import (
    CounterfactualGAN,
    Decoding,
    GANObjective,
    counterfactuals,
    distinct_valid,
    make_constraints,
    model_labels,
    nn_index,
    pairwise_diversity,
    train_gan,
)
from jcausal.tracer.datasets import load_breast_cancer

# the constraints of the variant rows (and of tests/tracer/test_counterfactual_actionable.py): the
# five features jcausal's unconstrained counterfactuals change most often, and three ranges (data
# units) on the next ones
IMMUTABLE = ["radius error", "worst texture", "worst area", "mean concave points", "worst concave points"]
RANGES = {"mean concavity": (0.0, 0.15), "worst radius": (8.0, 25.0), "area error": (None, 100.0)}


def setup(*, quick: bool, rows: int, seed: int = 0) -> dict:
    d = load_breast_cancer()
    tr, te = train_test_split(len(d.y), test_size=0.25, seed=seed)
    model = MLP((30, 64, 32, 2), rngs=nnx.Rngs(seed))
    train(model, d.X[tr], d.y[tr], key=jax.random.key(seed), epochs=20 if quick else 200, learning_rate=3e-3,
          progress=False)
    y_model, p = model_labels(model, d.X[tr])
    keep = p.max(1) >= 0.99
    if keep.sum() < 20:  # a barely trained quick model: keep every row
        keep[:] = True
    x = d.X[te][:rows]
    pred, _ = model_labels(model, x)
    return {"data": d, "model": model, "x_train": d.X[tr][keep], "y_train": y_model[keep], "x_all": d.X[tr],
            "x": x, "targets": 1 - pred, "test_accuracy": float(np.mean(model_labels(model, d.X[te])[0] ==
                                                                         d.y[te]))}


def train_cf_gan(task: dict, *, steps: int, l1: float = 0.0, constrained: bool = False, seed: int = 0):
    index = nn_index(task["x_train"], task["y_train"], 2)
    gan = CounterfactualGAN(2, input_shape=(30,), kind="tabular", latent=8, channels=16, rngs=nnx.Rngs(seed))
    kw = dict(immutable=IMMUTABLE, ranges=RANGES, feature_names=list(task["data"].feature_names),
              scaler=task["data"].scaler) if constrained else {}
    t0 = time.perf_counter()
    res = train_gan(gan, task["x_train"], task["y_train"], key=jax.random.key(seed), steps=steps, lam=0.9,
                    index=index, batch_size=64, objective=GANObjective(l1=l1, **kw),
                    loop=Loop(log_every=10, progress=False))
    jax.block_until_ready(jax.tree.leaves(nnx.state(gan)))
    return gan, index, time.perf_counter() - t0, res


def _predict(model, x) -> np.ndarray:
    return np.asarray(jax.vmap(lambda v: jnp.argmax(model(v)))(jnp.asarray(x, jnp.float32)))


def metrics(task: dict, cfs: np.ndarray, found: np.ndarray, seconds: float, *, num: int = 1,
            constraints=None) -> dict:
    """Quality of ``cfs`` ``(n, num, d)`` (``found`` ``(n, num)``: a counterfactual was returned)."""
    x, t, model = task["x"], task["targets"], task["model"]
    n = len(x)
    valid = np.zeros((n, num), bool)
    if found.any():
        valid[found] = _predict(model, cfs[found]) == np.repeat(t[:, None], num, 1)[found]
    first, ok = cfs[:, 0], found[:, 0]
    delta = np.abs(first.astype(np.float64) - x)
    row = {"count": n, "num": num, "found_percent": 100.0 * ok.mean(),
           "validity_percent": 100.0 * valid[:, 0].mean(),
           "mean_l2": float(np.linalg.norm(first - x, axis=1)[ok].mean()) if ok.any() else None,
           "mean_l1": float(delta.sum(1)[ok].mean()) if ok.any() else None,
           "features_changed": float((delta > 1e-6).sum(1)[ok].mean()) if ok.any() else None,
           "features_changed_1e-3": float((delta > 1e-3).sum(1)[ok].mean()) if ok.any() else None,
           "seconds": seconds, "ms_per_counterfactual": 1e3 * seconds / (n * num)}
    if num > 1:
        distinct = np.ones(n, bool)
        for i in range(num):
            for j in range(i + 1, num):
                distinct &= np.any(cfs[:, i] != cfs[:, j], -1)
        row["all_valid_distinct_percent"] = 100.0 * float(np.mean(valid.all(1) & distinct & found.all(1)))
        full = found.all(1)
        row["mean_diversity"] = float(pairwise_diversity(cfs)[full].mean()) if full.any() else None
    if constraints is not None:
        names = list(task["data"].feature_names)
        fixed = [names.index(f) for f in IMMUTABLE]
        raw = task["data"].scaler.inverse_transform(cfs)
        in_range = np.ones((n, num), bool)
        for f, (lo, hi) in RANGES.items():
            v = raw[..., names.index(f)]
            in_range &= (v >= (-np.inf if lo is None else lo)) & (v <= (np.inf if hi is None else hi))
        same = np.all(cfs[..., fixed].view(np.uint32) == x[:, None, fixed].view(np.uint32), -1)
        close = np.all(np.abs(cfs[..., fixed] - x[:, None, fixed]) <= 1e-3, -1)  # forgives DiCE's rounding
        row["immutable_bitwise_percent"] = 100.0 * float(same[found].mean()) if found.any() else None
        row["immutable_within_1e-3_percent"] = 100.0 * float(close[found].mean()) if found.any() else None
        row["ranges_respected_percent"] = 100.0 * float(in_range[found].mean()) if found.any() else None
    return row


def run_jcausal(task, gan, index, *, repeats: int, num: int = 1, constrained: bool = False,
                decoding: Decoding | None = None) -> tuple[dict, object]:
    d = task["data"]
    kw = dict(immutable=IMMUTABLE, ranges=RANGES, feature_names=list(d.feature_names), scaler=d.scaler,
              on_unreachable="keep") if constrained else {}

    def call():
        return counterfactuals(gan, task["model"], task["x"], task["targets"], index, x_train=task["x_train"],
                               num=num, decoding=decoding, **kw)

    t0 = time.perf_counter()
    r = call()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        r = call()
        runs.append(time.perf_counter() - t0)
    row = metrics(task, r.alternatives, np.ones(r.alternatives.shape[:2], bool), statistics.median(runs),
                  num=num, constraints=constrained or None)
    row["first_call_seconds"] = first
    row["library_summary"] = r.summary()
    if num > 1:  # the library's own count agrees with the independent one above
        row["library_all_valid_distinct_percent"] = 100.0 * float(distinct_valid(r).mean())
    return row, r


def run_dice(task, method: str, *, num: int = 1, constrained: bool = False, seed: int = 0) -> dict:
    import dice_ml
    import pandas as pd

    d = task["data"]
    names = list(d.feature_names)
    model = task["model"]

    class Wrapped:  # DiCE's sklearn backend: predict_proba on a DataFrame of scaled features
        def predict_proba(self, df):
            v = jnp.asarray(np.asarray(df[names], np.float32))
            return np.asarray(jax.vmap(lambda r: jax.nn.softmax(model(r)))(v))

        def predict(self, df):
            return self.predict_proba(df).argmax(1)

    train_df = pd.DataFrame(np.asarray(task["x_all"], np.float64), columns=names)  # DiCE writes float64
    train_df["label"] = model_labels(model, task["x_all"])[0]
    data = dice_ml.Data(dataframe=train_df, continuous_features=names, outcome_name="label")
    dm = dice_ml.Model(model=Wrapped(), backend="sklearn", model_type="classifier")
    exp = dice_ml.Dice(data, dm, method=method)
    query = pd.DataFrame(np.asarray(task["x"], np.float64), columns=names)
    kw = {}
    if constrained:
        cons = make_constraints(30, immutable=IMMUTABLE, ranges=RANGES, feature_names=names, scaler=d.scaler)
        kw["features_to_vary"] = [f for f in names if f not in IMMUTABLE]
        kw["permitted_range"] = {f: [float(max(cons.low[names.index(f)], 0.0)),
                                     float(min(cons.high[names.index(f)], 1.0))] for f in RANGES}
    if method == "random":
        kw["random_seed"] = seed
    np.random.seed(seed)  # noqa: NPY002 - DiCE's genetic search draws from numpy's and Python's global state
    random.seed(seed)
    n = len(task["x"])
    cfs = np.repeat(task["x"][:, None], num, 1).copy()
    found = np.zeros((n, num), bool)
    errors: dict[str, int] = {}
    seconds = 0.0
    for i in range(n):  # one query at a time: a query DiCE fails on (an exception) counts as not found
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # DiCE's per-call progress bar
                out = exp.generate_counterfactuals(query.iloc[i:i + 1], total_CFs=num,
                                                   desired_class="opposite", verbose=False, **kw)
        except Exception as err:  # noqa: BLE001 - recorded in the results
            seconds += time.perf_counter() - t0
            key = f"{type(err).__name__}: {err}"
            errors[key] = errors.get(key, 0) + 1
            continue
        seconds += time.perf_counter() - t0
        df = out.cf_examples_list[0].final_cfs_df
        if df is None or len(df) == 0:
            continue
        v = np.asarray(df[names], np.float32)[:num]
        cfs[i, :len(v)] = v
        found[i, :len(v)] = True
    row = metrics(task, cfs, found, seconds, num=num, constraints=constrained or None)
    row["dice_errors"] = errors
    row["dice_settings"] = {"method": method, "total_CFs": num, "desired_class": "opposite", **(
        {"features_to_vary": "all but the immutable", "permitted_range": "RANGES in scaled units"}
        if constrained else {})}
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    fields = [("validity_percent", "validity (%)"), ("features_changed", "features changed"),
              ("mean_l2", "mean L2 (scaled units)"), ("ms_per_counterfactual", "ms per counterfactual (log)")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 0.42 * len(rows) + 1.8), sharey=True, layout="constrained")
    colors = ["#1565c0" if r["method"].startswith("jcausal") else "#ef6c00" for r in rows]
    for ax, (key, title) in zip(axes, fields):
        vals = [np.nan if r.get(key) is None else r[key] for r in rows]
        ax.barh(range(len(rows)), vals, color=colors)
        ax.set_title(title, fontsize=9)
        if key == "ms_per_counterfactual":
            ax.set_xscale("log")
        for i, v in enumerate(vals):
            if np.isfinite(v):
                ax.text(v, i, f" {v:.3g}", va="center", fontsize=7)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("Counterfactuals on the breast-cancer MLP (first test rows, the other class): "
                 "jcausal (blue) vs DiCE (orange)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 rows, 200 GAN steps, no sweeps (smoke run)")
    ap.add_argument("--no-dice", action="store_true", help="skip DiCE (also skipped when not installed)")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    rows_n = 10 if args.quick else args.rows
    steps = 200 if args.quick else 1500
    reps = 1 if args.quick else args.repeats
    task = setup(quick=args.quick, rows=rows_n)
    gan, index, train_s, _ = train_cf_gan(task, steps=steps)
    result = {"quick": args.quick, "machine": machine(), "load_average_at_start": os.getloadavg(),
              "settings": {
        "rows": rows_n, "gan_steps": steps, "lam": 0.9, "batch": 64, "latent": 8, "min_confidence": 0.99,
        "immutable": IMMUTABLE, "ranges_data_units": RANGES, "repeats": reps,
        "default_decoding": dataclasses.asdict(Decoding())},
        "test_accuracy": task["test_accuracy"], "gan_training_seconds": train_s, "rows": []}
    rows = result["rows"]

    def add(label, method, row):
        rows.append({"label": label, "method": method, **row})
        print(f"{label:52s} valid {row['validity_percent']:5.1f}%  "
              f"features {row['features_changed'] or 0:5.2f}  L2 {row['mean_l2'] or 0:.3f}  "
              f"{row['ms_per_counterfactual']:.3f} ms", flush=True)

    add("jcausal (defaults: sparse)", "jcausal", run_jcausal(task, gan, index, repeats=reps)[0])
    add("jcausal, the paper's decoding (dense)", "jcausal",
        run_jcausal(task, gan, index, repeats=reps, decoding=Decoding.dense())[0])
    add("jcausal, 5 immutable + 3 ranges", "jcausal",
        run_jcausal(task, gan, index, repeats=reps, constrained=True)[0])
    add("jcausal, num=3", "jcausal", run_jcausal(task, gan, index, repeats=reps, num=3)[0])
    add("jcausal, 5 immutable + 3 ranges, num=3", "jcausal",
        run_jcausal(task, gan, index, repeats=reps, num=3, constrained=True)[0])
    gan_c, index_c, train_c, _ = train_cf_gan(task, steps=steps, constrained=True)
    row = run_jcausal(task, gan_c, index_c, repeats=reps, constrained=True)[0]
    row["gan_training_seconds"] = train_c
    add("jcausal, 5 immutable + 3 ranges, GAN trained with them", "jcausal", row)

    if not args.quick:  # the measurements behind the defaults
        sweep = result["sweep"] = {"scales": [], "l1": []}
        for scales in ((1.0,), (1.0, 2.0), (1.0, 2.0, 4.0)):
            r = run_jcausal(task, gan, index, repeats=1, decoding=Decoding(scales=scales))[0]
            keys = ("validity_percent", "features_changed", "mean_l2", "ms_per_counterfactual")
            sweep["scales"].append({"scales": scales, **{k: r[k] for k in keys}})
        for l1 in (0.0, 0.03, 0.1):
            g, ix, _, _ = train_cf_gan(task, steps=steps, l1=l1)
            r = run_jcausal(task, g, ix, repeats=1)[0]
            keys = ("validity_percent", "features_changed", "mean_l2")
            sweep["l1"].append({"l1": l1, **{k: r[k] for k in keys}})
        print("sweep:", sweep, flush=True)

    try:
        if args.no_dice:
            raise ImportError("--no-dice")
        import dice_ml  # noqa: F401

        result["dice_version"] = __import__("importlib.metadata").metadata.version("dice-ml")
        for method in ("random", "genetic"):
            add(f"DiCE {method}", "dice", run_dice(task, method))
            add(f"DiCE {method}, 5 immutable + 3 ranges", "dice", run_dice(task, method, constrained=True))
        add("DiCE random, num=3", "dice", run_dice(task, "random", num=3))
    except ImportError as err:
        result["dice_skipped"] = str(err)
        print(f"DiCE skipped: {err}")

    tag = "counterfactual_dice" + ("_quick" if args.quick else "")
    write_json(args.out / f"{tag}.json", result)
    plot(rows, args.out / f"{tag}.png")
    print(f"GAN training {train_s:.1f} s; wrote {args.out / (tag + '.json')} and .png")
    return result


if __name__ == "__main__":
    main()
