"""``jcausal gce``: generative causal explanations (O'Shaughnessy et al. 2020).

``jcausal gce linear``: section 4's demo (a linear-Gaussian map explaining a probit linear
classifier in R^N; seconds). ``jcausal gce mnist --classes 3 8``: the section 5 experiment
(trains or loads the CNN classifier and the VAE explainer; writes sweeps, flow and accuracy
figures and a JSON summary).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["register"]


def _write_json(path: Path, payload: dict) -> None:
    from jcausal._src.io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())


def _save_fig(fig, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    from jcausal._src.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _linear(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jcausal.gce import LinearGaussian, information_flow, train
    from jcausal.plot.gce import plot_linear_explanation, plot_training

    if args.dim < 2:
        raise SystemExit(f"jcausal gce linear: --dim must be >= 2, got {args.dim}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    r = rng.normal(size=args.dim)
    a = jnp.asarray(args.steepness * r / np.linalg.norm(r), jnp.float32)

    def probit(a, x):
        p1 = jax.scipy.stats.norm.cdf(a @ x)
        return jnp.stack([1.0 - p1, p1])

    K, L = 1, args.dim - 1
    model = LinearGaussian(args.dim, K, L, gamma=args.gamma, unit_columns=True, rngs=nnx.Rngs(args.seed))
    try:
        res = train(model, probit, key=jax.random.key(args.seed), K=K, L=L, lam=args.lam, steps=args.steps,
                    classify_params=a, n_alpha=args.n_alpha, n_beta=args.n_beta,
                    learning_rate=args.lr, progress=not args.quiet)
    except ValueError as err:
        raise SystemExit(f"jcausal gce linear: {err}") from None
    W = np.asarray(model.weights)
    an = np.asarray(a) / np.linalg.norm(np.asarray(a))
    cos_alpha = float(abs(W[:, 0] @ an) / np.linalg.norm(W[:, 0]))
    cos_beta = (np.abs(W[:, 1:].T @ an) / np.linalg.norm(W[:, 1:], axis=0)).tolist()
    C = float(information_flow(model.decode, lambda x: probit(a, x), jax.random.key(1), K=K, L=L,
                               n_alpha=500, n_beta=200, noisy=True))
    summary = {"dim": args.dim, "K": K, "L": L, "lam": args.lam, "gamma": args.gamma, "steps": res.steps,
               "a": np.asarray(a).tolist(), "W": W.tolist(), "cos_w_alpha_a": cos_alpha,
               "cos_w_beta_a": cos_beta, "C_nats": C, "D": res.history["D"][-1]}
    _write_json(out / "linear.json", summary)
    _save_fig(plot_linear_explanation(W, np.asarray(a), K), out / "linear.png")
    _save_fig(plot_training(res.history, lam=args.lam), out / "linear_training.png")
    print(f"|cos(w_alpha, a)| = {cos_alpha:.4f}   max |cos(w_beta, a)| = {max(cos_beta):.4f}   "
          f"C = {C:.4f} nats   -> {out}/linear.json, linear.png")
    return 0


def _mnist(args) -> int:
    import jax
    import numpy as np

    from jcausal.gce.mnist import explain_digits, fit_classifier, load_digits, summary
    from jcausal.plot.gce import plot_accuracy_drop, plot_factor_flow, plot_sweeps, plot_training

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        data = load_digits(args.data, tuple(args.classes), seed=args.seed)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"jcausal gce mnist: {err}") from None
    key = jax.random.key(args.seed)
    k_clf, k_exp = jax.random.split(key)
    clf = fit_classifier(data, key=k_clf, epochs=args.classifier_epochs,
                         checkpoint=out / "classifier.msgpack", progress=not args.quiet)
    if not args.quiet:
        print(f"classifier validation accuracy {clf.val_accuracy:.4f}")
    try:
        exp = explain_digits(data, clf, key=k_exp, K=args.K, L=args.L, lam=args.lam, steps=args.steps,
                             batch_size=args.batch_size, n_alpha=args.n_alpha, n_beta=args.n_beta,
                             learning_rate=args.lr, likelihood=args.likelihood,
                             checkpoint=out / "explainer.msgpack",
                             checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    except ValueError as err:
        raise SystemExit(f"jcausal gce mnist: {err}") from None
    s = summary(exp, clf)
    s.update(classes=list(args.classes), lam=args.lam, n_alpha=args.n_alpha, n_beta=args.n_beta,
             batch_size=args.batch_size, learning_rate=args.lr, likelihood=args.likelihood)
    _write_json(out / "summary.json", s)
    names = [str(c) for c in args.classes]
    _save_fig(plot_factor_flow(exp.flows, exp.K), out / "flow.png")
    acc = exp.accuracy
    _save_fig(plot_accuracy_drop(float(acc.original), float(acc.reencoded), np.asarray(acc.resampled), exp.K),
              out / "accuracy.png")
    for i in range(np.asarray(exp.sweep.images).shape[0]):
        _save_fig(plot_sweeps(exp.sweep.images, exp.sweep.probs, exp.sweep.offsets, exp.K, sample=i,
                              class_names=names), out / f"sweeps_{i}.png")
    _save_fig(plot_training(exp.fit.history, lam=args.lam), out / "training.png")
    print(json.dumps({k: s[k] for k in ("flow_nats", "accuracy", "steps", "nonfinite_step")}, indent=1))
    print(f"-> {out}/summary.json, flow.png, accuracy.png, sweeps_*.png, training.png")
    return 0


def register(sub) -> None:
    """Add ``jcausal gce`` (with ``linear`` and ``mnist``) to the top-level subparsers."""
    g = sub.add_parser("gce", help="generative causal explanations (GCE paper)",
                       description="Learn latent factors that explain a classifier: a generative map "
                                   "trained on C + lambda D (O'Shaughnessy et al. 2020).")
    gs = g.add_subparsers(dest="gce_command", metavar="EXPERIMENT", required=True)

    lin = gs.add_parser("linear", help="section 4 demo: linear-Gaussian map, probit linear classifier",
                        description="Train g(alpha, beta) = W [alpha; beta] + eps (unit-norm columns) to "
                                    "explain p(Y=1|x) = Phi(a^T x) in R^dim with K = 1, L = dim - 1; "
                                    "Proposition 3 predicts w_alpha parallel to a and W_beta "
                                    "orthogonal to it. Writes linear.json and linear.png.")
    lin.add_argument("--dim", type=int, default=2, help="data dimension N (default: %(default)s)")
    lin.add_argument("--steps", type=int, default=300, help="training steps (default: %(default)s)")
    lin.add_argument("--lam", type=float, default=0.1, help="lambda (default: %(default)s)")
    lin.add_argument("--gamma", type=float, default=0.05, help="noise variance (default: %(default)s)")
    lin.add_argument("--steepness", type=float, default=2.0,
                     help="|a|, the classifier's steepness (default: %(default)s)")
    lin.add_argument("--n-alpha", type=int, default=64, help="alpha samples per step (default: %(default)s)")
    lin.add_argument("--n-beta", type=int, default=16, help="beta samples per step (default: %(default)s)")
    lin.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default: %(default)s)")
    lin.add_argument("--out", default="jcausal-out/gce", help="output folder (default: %(default)s)")
    lin.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    lin.add_argument("--quiet", action="store_true", help="no progress bar")
    lin.set_defaults(func=_linear)

    mn = gs.add_parser("mnist", help="section 5: explain a CNN on MNIST digit classes with a VAE",
                       description="Train (or load from --out) the Table 1 CNN on --classes, then the "
                                   "Table 2 VAE explainer with K causal and L noncausal factors. Writes "
                                   "summary.json, flow.png, accuracy.png, sweeps_*.png, training.png, "
                                   "and the checkpoints classifier.msgpack, explainer.msgpack.")
    mn.add_argument("--classes", type=int, nargs="+", default=[3, 8], help="digits (default: 3 8)")
    mn.add_argument("--data", default=None, help="folder of the MNIST IDX files (default: $JCAUSAL_DATA)")
    mn.add_argument("--K", type=int, default=1, help="causal factors (default: %(default)s)")
    mn.add_argument("--L", type=int, default=7, help="noncausal factors (default: %(default)s)")
    mn.add_argument("--lam", type=float, default=0.05, help="lambda (default: %(default)s)")
    mn.add_argument("--steps", type=int, default=800,
                    help="explainer steps (default: %(default)s; the paper uses 8000)")
    mn.add_argument("--n-alpha", type=int, default=100, help="N_alpha (default: %(default)s)")
    mn.add_argument("--n-beta", type=int, default=25, help="N_beta (default: %(default)s)")
    mn.add_argument("--batch-size", type=int, default=64, help="VAE batch (default: %(default)s)")
    mn.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default: %(default)s)")
    mn.add_argument("--likelihood", choices=["sse", "bernoulli"], default="sse",
                    help="the VAE's log p(x | z): sse as in the authors' code, or bernoulli (trains "
                         "out of the plateau where the decoder ignores z sooner; default: %(default)s)")
    mn.add_argument("--classifier-epochs", type=int, default=3, help="CNN epochs (default: %(default)s)")
    mn.add_argument("--checkpoint-every", type=int, default=200, help="steps (default: %(default)s)")
    mn.add_argument("--out", default="jcausal-out/gce-mnist", help="output folder (default: %(default)s)")
    mn.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    mn.add_argument("--quiet", action="store_true", help="no progress bars")
    mn.set_defaults(func=_mnist)
