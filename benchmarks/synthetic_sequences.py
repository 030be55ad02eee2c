"""The ACE paper's synthetic-sequence study (section 5.2, appendix A.6.1, Figure 3): a GRU with one
input, one hidden and one output unit (sigmoid activations) is trained to tell sequences whose first
three values are ~+1 from those ~-1; causal-attribution saliency and Integrated Gradients are
compared with an imputation study.

    python benchmarks/synthetic_sequences.py [--quick] [--out benchmarks/results]

Writes ``synthetic_sequences[_quick].json`` and ``synthetic_sequences[_quick]_{saliency,lag}.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_json  # noqa: E402

from jcausal.ace import explain  # noqa: E402
from jcausal.ace.recurrent import lag_tau, sequence_stats  # noqa: E402
from jcausal.baselines import integrated_gradients  # noqa: E402
from jcausal.data import make_sequences  # noqa: E402
from jcausal.models import SequenceClassifier, functional, predict, train  # noqa: E402

L = 12  # the sequence length studied (positions 0..11), as in the paper's Figure 3


def train_gru(key, n_train, epochs):
    k_data, k_val, k_train = jax.random.split(key, 3)
    tr = make_sequences(k_data, n_train)
    va = make_sequences(k_val, max(n_train // 5, 1000))
    model = SequenceClassifier(1, 1, 1, cell="gru", activation="sigmoid", gate="sigmoid",
                               rngs=nnx.Rngs(0))
    hist = train(model, (tr.x, tr.lengths), tr.y, key=k_train, epochs=epochs, batch_size=32,
                 learning_rate=2e-2, loss="bce", X_val=(va.x, va.lengths), y_val=va.y,
                 progress=False).history
    return model, tr, hist


def imputation(apply, params, key, n_test):
    """Figure 3c: replace x^p (p = 0, 1, 2) by N(0, 0.2^2) noise; count changed predictions."""
    k_data, k_noise = jax.random.split(key)
    te = make_sequences(k_data, n_test)

    def pred(x):
        logits = predict(apply, params, (x, te.lengths), batch_size=4096)[:, 0]
        return (logits > 0).astype(jnp.int32)

    base = pred(te.x)
    rows = {"none": {"average_test_error": float(jnp.mean(base != te.y)), "prediction_changes": 0}}
    for p, k in zip(range(3), jax.random.split(k_noise, 3)):
        x = te.x.at[:, p].set(0.2 * jax.random.normal(k, (n_test,)))
        yhat = pred(x)
        rows[f"x{p}"] = {"average_test_error": float(jnp.mean(yhat != te.y)),
                         "prediction_changes": int(jnp.sum(yhat != base))}
    return rows, n_test


def saliency(apply, params, train_data, key, n_show, num_alphas, max_order):
    """ACE saliency (ACE at the inputs' own values, thresholded at 0) and IG for test sequences of
    length L. The GRU has no output-to-input feedback: Phase I runs on the unrolled network."""
    def prob(p, z):
        return jax.nn.sigmoid(apply(p, z.reshape(L, 1), L))

    stats = sequence_stats(train_data.x, train_data.lengths, horizon=L)
    res = explain(prob, stats=stats, params=params, num_alphas=num_alphas, max_order=max_order)
    te = make_sequences(key, 50 * n_show)
    X = np.asarray(te.x)[np.asarray(te.lengths) == L][:n_show, :L]
    ace = np.asarray(res.local_saliency(X))[..., 0]  # (n_show, L)
    ig = np.asarray(jax.vmap(lambda x: integrated_gradients(prob, x, params=params, steps=128)[0])(
        jnp.asarray(X)))
    global_ace = np.asarray(res.ace())[..., 0]  # (L, A)
    return X, ace, ig, res, global_ace


def run(quick: bool, out_dir: Path, seed: int = 0):
    t0 = time.perf_counter()
    key = jax.random.key(seed)
    k_train, k_imp, k_sal = jax.random.split(key, 3)
    n_train, epochs = (4000, 8) if quick else (20000, 20)
    n_test = 100_000
    model, tr, hist = train_gru(k_train, n_train, epochs)
    apply, params = functional(model)
    imp, n_imp = imputation(apply, params, k_imp, n_test)
    X, ace, ig, res, global_ace = saliency(apply, params, tr, k_sal, 8 if quick else 16,
                                           12 if quick else 20, 4 if quick else 5)

    def f_out(p, z):
        return jax.nn.sigmoid(apply(p, z, z.shape[0]))

    lags = lag_tau(f_out, tr.x, t=L - 1, params=params, lengths=tr.lengths, tol=1e-3)
    pos_ace = np.maximum(ace, 0.0)
    mean_abs_ace = np.abs(ace).mean(0)
    result = {
        "experiment": "synthetic_sequences", "quick": quick, "seed": seed, "machine": machine(),
        "train": {"sequences": n_train, "epochs": epochs, "final_loss": hist["loss"][-1],
                  "val_accuracy": hist["val_accuracy"][-1]},
        "imputation": {"test_sequences": n_imp, **imp},
        "saliency": {
            "length": L, "sequences": len(X),
            "mean_positive_ace_by_position": pos_ace.mean(0).tolist(),
            "mean_abs_ace_by_position": mean_abs_ace.tolist(),
            "mean_ace_by_position": ace.mean(0).tolist(),
            "mean_abs_ig_by_position": np.abs(ig).mean(0).tolist(),
            "global_ace_range_by_position": (global_ace.max(1) - global_ace.min(1)).tolist(),
            "regressor_orders": np.asarray(res.orders)[:, 0].tolist(),
        },
        "lag_tau": {"t": L - 1, "tol": 1e-3, "tau": float(lags.tau),
                    "histogram": np.bincount(np.asarray(lags.per_sequence), minlength=L).tolist()},
        "seconds": time.perf_counter() - t0,
    }
    name = "synthetic_sequences_quick" if quick else "synthetic_sequences"
    write_json(out_dir / f"{name}.json", result)
    _figures(X, ace, ig, lags, out_dir, name)
    print(f"GRU val accuracy {result['train']['val_accuracy']:.4f}; imputation on {n_imp} sequences:")
    for k, v in imp.items():
        print(f"  impute {k:5s} error {v['average_test_error']:.4f}  changes {v['prediction_changes']}")
    print("mean |ACE| by position:", np.round(mean_abs_ace, 4).tolist())
    print("mean positive ACE by position:", np.round(pos_ace.mean(0), 4).tolist())
    print(f"lag tau (t = {L - 1}, tol 1e-3): {float(lags.tau):.2f}")
    return result


def _figures(X, ace, ig, lags, out_dir, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 0.5 * len(X) + 1.5))
    for ax, data, title, cmap in ((axes[0], X, "input sequence", "RdBu_r"),
                                  (axes[1], np.maximum(ace, 0), "causal attribution (ACE > 0)", "viridis"),
                                  (axes[2], ig, "Integrated Gradients", "RdBu_r")):
        lim = float(np.abs(data).max()) or 1.0
        im = ax.imshow(data, cmap=cmap, vmin=0 if cmap == "viridis" else -lim, vmax=lim, aspect="auto")
        ax.set(title=title, xlabel="position t", ylabel="test sequence")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}_saliency.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    per = np.asarray(lags.per_sequence)
    ax.hist(per, bins=np.arange(per.max() + 2) - 0.5)
    ax.set(xlabel="lag k (largest with |dy/dx^{t-k}| > 1e-3)", ylabel="sequences",
           title=f"lag tau = {float(lags.tau):.2f}")
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}_lag.png", dpi=110)
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
