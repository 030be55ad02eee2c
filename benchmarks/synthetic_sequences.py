"""The ACE paper's synthetic-sequence study (section 5.2, appendix A.6.1, Figure 3): a GRU with one
input, one hidden and one output unit (sigmoid activations) is trained to tell sequences whose first
three values are ~+1 from those ~-1; causal-attribution saliency and Integrated Gradients are
compared with an imputation study.

Two GRUs are trained, identical but for reading order: ``forward`` reads x^0 first, ``reversed``
reads each sequence from its last valid value back to x^0 (so x^0 is read last). A one-unit GRU
weighs what it read last most; the paper's imputation counts (x^0 >> x^1 >> x^2) are the pattern
of a model that reads x^0 last. In both, the question is whether ACE tells the same story as the
imputation counts.

    python -m benchmarks.synthetic_sequences [--quick] [--out benchmarks/results]

Writes ``synthetic_sequences[_quick].json`` and ``synthetic_sequences[_quick]_{saliency,lag}.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import RESULTS, machine, write_json
from jcausal.ace import Execution, explain
from jcausal.ace.recurrent import lag_tau, sequence_stats
from jcausal.comparisons import integrated_gradients
from jcausal.data import make_sequences
from jcausal.models import SequenceClassifier, functional, predict, train
from jcausal.plot import plot_lag_tau, plot_sequence_saliency

L = 12  # the sequence length studied (positions 0..11), as in the paper's Figure 3


def train_gru(key, n_train, epochs, reverse):
    k_data, k_val, k_train = jax.random.split(key, 3)
    tr = make_sequences(k_data, n_train)
    va = make_sequences(k_val, max(n_train // 5, 1000))
    model = SequenceClassifier(1, 1, 1, cell="gru", activation="sigmoid", gate="sigmoid",
                               reverse=reverse, rngs=nnx.Rngs(0))
    hist = train(model, (tr.x, tr.lengths), tr.y, key=k_train, epochs=epochs, batch_size=32,
                 learning_rate=2e-2, loss="bce", X_val=(va.x, va.lengths), y_val=va.y,
                 progress=False).history
    return model, tr, hist


def imputation(apply, params, key, n_test):
    """Figure 3c: replace x^p (p = 0, 1, 2) by N(0, 0.2) noise (the data's noise); count changed
    predictions against the un-imputed ones."""
    k_data, k_noise = jax.random.split(key)
    te = make_sequences(k_data, n_test)

    def pred(x):
        logits = predict(apply, params, (x, te.lengths), batch_size=4096)[:, 0]
        return (logits > 0).astype(jnp.int32)

    base = pred(te.x)
    rows = {"none": {"average_test_error": float(jnp.mean(base != te.y)), "prediction_changes": 0}}
    for p, k in zip(range(3), jax.random.split(k_noise, 3)):
        x = te.x.at[:, p].set(0.2 ** 0.5 * jax.random.normal(k, (n_test,)))
        yhat = pred(x)
        rows[f"x{p}"] = {"average_test_error": float(jnp.mean(yhat != te.y)),
                         "prediction_changes": int(jnp.sum(yhat != base))}
    return rows, n_test


def saliency(apply, params, train_data, key, n_show, num_alphas, max_order):
    """ACE saliency (ACE at the inputs' own values, thresholded at 0) and IG for test sequences of
    length L. The GRU has no output-to-input feedback, so Phase I runs on the unrolled network.

    Phase I uses eqn 2 (``monte_carlo`` over the training sequences): for these sharp one-unit GRUs
    the second-order expansion (eqn 4) leaves [0, 1] by far (its range is recorded as well)."""
    def prob(p, z):
        return jax.nn.sigmoid(apply(p, z.reshape(L, 1), L))

    stats = sequence_stats(train_data.x, train_data.lengths, horizon=L)
    keep = np.asarray(train_data.lengths) >= L
    rows = np.asarray(train_data.x)[keep, :L]
    res = explain(prob, stats=stats, params=params, num_alphas=num_alphas, max_order=max_order,
                  method="monte_carlo", data=rows, run=Execution(batch_size=8))
    taylor = explain(prob, stats=stats, params=params, num_alphas=num_alphas, max_order=max_order)
    te = make_sequences(key, 50 * n_show)
    X = np.asarray(te.x)[np.asarray(te.lengths) == L][:n_show, :L]
    ace = np.asarray(res.local_saliency(X))[..., 0]  # (n_show, L)
    ig = np.asarray(jax.vmap(lambda x: integrated_gradients(prob, x, params=params, steps=128)[0])(
        jnp.asarray(X)))
    global_ace = np.asarray(res.ace())[..., 0]  # (L, A)
    taylor_range = [float(np.min(taylor.expectations)), float(np.max(taylor.expectations))]
    return X, ace, ig, res, global_ace, taylor_range


def study(reverse: bool, quick: bool, seed: int):
    key = jax.random.key(seed)
    k_train, k_imp, k_sal = jax.random.split(key, 3)
    n_train, epochs = (4000, 8) if quick else (20000, 20)
    n_test = 100_000
    model, tr, hist = train_gru(k_train, n_train, epochs, reverse)
    apply, params = functional(model)
    imp, n_imp = imputation(apply, params, k_imp, n_test)
    X, ace, ig, res, global_ace, taylor_range = saliency(apply, params, tr, k_sal, 8 if quick else 16,
                                                         12 if quick else 20, 4 if quick else 5)

    def logit(p, z):  # the pre-sigmoid output: the probability saturates, its logit does not
        return apply(p, z, z.shape[0])

    lags = lag_tau(logit, tr.x, t=L - 1, params=params, lengths=tr.lengths, tol=1e-3)
    pos_ace = np.maximum(ace, 0.0)
    summary = {
        "train": {"sequences": n_train, "epochs": epochs, "final_loss": hist["loss"][-1],
                  "val_accuracy": hist["val_accuracy"][-1]},
        "imputation": {"test_sequences": n_imp, **imp},
        "saliency": {
            "length": L, "sequences": len(X),
            "mean_positive_ace_by_position": pos_ace.mean(0).tolist(),
            "mean_abs_ace_by_position": np.abs(ace).mean(0).tolist(),
            "mean_ace_by_position": ace.mean(0).tolist(),
            "mean_abs_ig_by_position": np.abs(ig).mean(0).tolist(),
            "global_ace_range_by_position": (global_ace.max(1) - global_ace.min(1)).tolist(),
            "regressor_orders": np.asarray(res.orders)[:, 0].tolist(),
            "phase1_method": "monte_carlo",
            "second_order_expansion_range": taylor_range,
        },
        "lag_tau": {"t": L - 1, "tol": 1e-3, "output": "logit", "tau": float(lags.tau),
                    "histogram": np.bincount(np.asarray(lags.per_sequence), minlength=L).tolist()},
    }
    return summary, (X, ace, ig, lags)


def run(quick: bool, out_dir: Path, seed: int = 0):
    t0 = time.perf_counter()
    result = {"experiment": "synthetic_sequences", "quick": quick, "seed": seed, "machine": machine(),
              "noise_scale": 0.2 ** 0.5, "models": {}}
    name = "synthetic_sequences_quick" if quick else "synthetic_sequences"
    for label, reverse in (("forward", False), ("reversed", True)):
        summary, figs = study(reverse, quick, seed)
        result["models"][label] = summary
        _figures(*figs, out_dir, f"{name}_{label}")
        imp, sal = summary["imputation"], summary["saliency"]
        print(f"[{label}] GRU val accuracy {summary['train']['val_accuracy']:.4f}; imputation on "
              f"{imp['test_sequences']} sequences:")
        for k in ("none", "x0", "x1", "x2"):
            print(f"  impute {k:5s} error {imp[k]['average_test_error']:.4f}  "
                  f"changes {imp[k]['prediction_changes']}")
        print("  mean |ACE| by position:", np.round(sal["mean_abs_ace_by_position"], 4).tolist())
        print("  mean positive ACE by position:", np.round(sal["mean_positive_ace_by_position"], 4).tolist())
        print(f"  lag tau (t = {L - 1}, tol 1e-3): {summary['lag_tau']['tau']:.2f}")
    result["seconds"] = time.perf_counter() - t0
    write_json(out_dir / f"{name}.json", result)
    return result


def _figures(X, ace, ig, lags, out_dir, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = ((plot_sequence_saliency(X, ace, ig), "saliency"), (plot_lag_tau(lags, tol=1e-3), "lag"))
    for fig, suffix in figures:
        fig.savefig(out_dir / f"{name}_{suffix}.png", dpi=110)
        plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    run(args.quick, args.out, args.seed)


if __name__ == "__main__":
    main()
