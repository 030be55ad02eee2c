"""``jcausal gce``: generative causal explanations (O'Shaughnessy et al. 2020).

``jcausal gce linear``: section 4's demo (a linear-Gaussian map explaining a probit linear
classifier in R^N; seconds). ``jcausal gce mnist --classes 3 8``: the section 5 experiment
(trains or loads the CNN classifier and the VAE explainer; writes sweeps, flow and accuracy
figures and a JSON summary).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path

from jcausal.cli.core import (
    CLIError,
    TrainingFailed,
    available_bytes,
    command,
    finite_float,
    nonneg_float,
    nonneg_int,
    partial_checkpoint,
    positive_float,
    positive_int,
    publish,
    require_trained,
)

__all__ = ["register"]

DEFAULT = " (default: %(default)s)"


def _linear_check(args):
    if args.dim < 2:
        raise CLIError(f"--dim must be >= 2 (K = 1 causal and dim - 1 noncausal factors), got {args.dim}")
    small = [f"{flag} {v}" for flag, v in (("--n-alpha", args.n_alpha), ("--n-beta", args.n_beta)) if v < 2]
    if small:  # this command has no --sampler: name what it does, not the library's sampler= option
        raise CLIError(f"{' and '.join(small)}: gce linear draws alpha and beta from a randomized Sobol "
                       "sequence, which needs at least 2 draws of each: raise it")


def _linear(args, folder, _) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jcausal.gce import ExplainerSettings, LinearGaussian, fit_explainer, information_flow
    from jcausal.models import Loop
    from jcausal.plot.gce import plot_linear_explanation, plot_training

    rng = np.random.default_rng(args.seed)
    r = rng.normal(size=args.dim)
    a = jnp.asarray(args.steepness * r / np.linalg.norm(r), jnp.float32)

    def probit(a, x):
        p1 = jax.scipy.stats.norm.cdf(a @ x)
        return jnp.stack([1.0 - p1, p1])

    K, L = 1, args.dim - 1
    model = LinearGaussian(args.dim, K, L, gamma=args.gamma, unit_columns=True, rngs=nnx.Rngs(args.seed))
    settings = ExplainerSettings(n_alpha=args.n_alpha, n_beta=args.n_beta, learning_rate=args.lr)
    res = fit_explainer(model, probit, key=jax.random.key(args.seed), K=K, L=L, lam=args.lam,
                        steps=args.steps, classify_params=a, settings=settings,
                        loop=Loop(progress=not args.quiet))
    require_trained(res.steps, res.nonfinite_step, what="jcausal gce linear")
    W = np.asarray(model.weights)
    W64 = np.asarray(W, np.float64)  # float64: |a|^2 overflows float32 for --steepness above ~1e19
    an = np.asarray(r / np.linalg.norm(r), np.float64)  # a's direction
    cos_alpha = float(abs(W64[:, 0] @ an) / np.linalg.norm(W64[:, 0]))
    cos_beta = (np.abs(W64[:, 1:].T @ an) / np.linalg.norm(W64[:, 1:], axis=0)).tolist()
    C = float(information_flow(model.decode, lambda x: probit(a, x), jax.random.key(1), K=K, L=L,
                               n_alpha=500, n_beta=200, noisy=True))
    if not np.isfinite([C, cos_alpha, *cos_beta]).all():
        raise TrainingFailed(f"jcausal gce linear: the trained map gives non-finite results (C = {C}, "
                             f"cos = {cos_alpha}); lower --lr")
    summary = {"dim": args.dim, "K": K, "L": L, "lam": args.lam, "gamma": args.gamma, "steps": res.steps,
               "seed": args.seed, "lr": args.lr, "steepness": args.steepness,
               "a": np.asarray(a).tolist(), "W": W.tolist(), "cos_w_alpha_a": cos_alpha,
               "cos_w_beta_a": cos_beta, "C_nats": C, "D": res.history["D"][-1]}
    publish(folder, "linear", {"linear.png": plot_linear_explanation(W, np.asarray(a), K),
                               "linear_training.png": plot_training(res.history, lam=args.lam)}, summary)
    out = Path(args.out)
    print(f"|cos(w_alpha, a)| = {cos_alpha:.4f}   max |cos(w_beta, a)| = {max(cos_beta):.4f}   "
          f"C = {C:.4f} nats   -> {out}/linear.json, linear.png")
    return 0


# the options that --paper switches to the authors' settings (GCEMnistConfig.paper):
# (flag, type or choices, default, --paper's value, help)
MNIST_OPTIONS = [
    ("--steps", positive_int, 500, 8000, "joint steps of C + lambda D"),
    ("--pretrain-steps", nonneg_int, 300, 0, "steps of D alone first"),
    ("--sampler", ["sobol", "stratified", "mc"], "sobol", "mc",
     "estimator of C: sobol (randomized quasi-Monte Carlo), stratified (Latin hypercube) or mc, "
     "the paper's Algorithm 2"),
    ("--n-alpha", positive_int, 128, 100, "N_alpha, alpha draws per estimate of C"),
    ("--n-beta", positive_int, 4, 25, "N_beta, beta draws per alpha"),
    ("--lr", positive_float, 1e-3, 5e-4, "Adam learning rate"),
    ("--likelihood", ["bernoulli", "sse"], "bernoulli", "sse",
     "the VAE's log p(x | z) (sse: the authors' code)"),
    ("--init-log-var", finite_float, -4.0, 0.0, "initial bias of the encoder's log-variance head"),
]
_PRESET = tuple(flag[2:].replace("-", "_") for flag, *_ in MNIST_OPTIONS)


def _mnist_config(args):
    """The run's :class:`GCEMnistConfig`: the defaults (or ``--paper``'s), then every option given."""
    from jcausal.experiments.gce_mnist import GCEMnistConfig

    base = GCEMnistConfig.paper() if args.paper else GCEMnistConfig()
    given = {("learning_rate" if k == "lr" else k): getattr(args, k) for k in _PRESET
             if getattr(args, k) is not None}
    return dataclasses.replace(base, K=args.K, L=args.L, lam=args.lam, batch_size=args.batch_size,
                               checkpoint_every=args.checkpoint_every, n_flow=tuple(args.flow_samples),
                               **given)


# bytes one decoded 28 x 28 image costs a training step of the information-flow term: the image, the
# classifier's activations on it, and both kept for the backward pass (a generous round figure)
_BYTES_PER_DECODE = 784 * 4 * 64


def _check_step_memory(config) -> None:
    """Refuse ``--n-alpha`` x ``--n-beta`` decodes per step that cannot fit in memory, for every
    sampler, before the classifier is trained."""
    decodes = config.n_alpha * config.n_beta
    need, have = decodes * _BYTES_PER_DECODE, available_bytes()
    if have and need > have // 2:
        raise CLIError(f"--n-alpha {config.n_alpha} x --n-beta {config.n_beta} = {decodes:,} decodes per "
                       f"step need about {need / 2**30:,.0f} GiB, more than half the {have / 2**30:.1f} GiB "
                       "available: the defaults (128 x 4 with --sampler sobol) estimate the flow as well as "
                       "the paper's 100 x 25")


def _mnist_check(args):
    from jcausal.experiments.gce_mnist import load_mnist_classes
    from jcausal.gce.objectives import check_sampler

    config = _mnist_config(args)
    try:
        check_sampler(config.sampler, config.n_alpha, config.n_beta, inner_dims=config.L)
    except ValueError as err:
        raise CLIError(str(err).replace("sampler=", "--sampler ").replace("n_alpha", "--n-alpha")
                       .replace("n_beta", "--n-beta")) from None
    _check_step_memory(config)

    classes = list(args.classes)
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
        raise CLIError(f"--classes needs at least 2 different digits in 0..9, got {classes}")
    try:
        return load_mnist_classes(args.data, tuple(classes), seed=args.seed)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(f"MNIST not found or unreadable ({err}); pass --data FOLDER with the IDX files") \
            from None


def _mnist(args, folder, data) -> int:
    import jax
    import numpy as np

    from jcausal.experiments.gce_mnist import explain_digits, fit_classifier, summary
    from jcausal.gce import PlateauWarning
    from jcausal.models.checkpoint import metadata_differences, read_metadata
    from jcausal.plot.gce import (
        plot_accuracy_drop,
        plot_factor_flow,
        plot_fine_sweep,
        plot_sweeps,
        plot_training,
    )

    out = Path(args.out)
    record = {"classes": list(args.classes), "seed": args.seed, "epochs": args.classifier_epochs}
    ck = out / "classifier.msgpack"
    if ck.is_file():
        diffs = metadata_differences(read_metadata(ck), record)
        if diffs:
            raise CLIError(f"{ck} was trained with other settings ({'; '.join(diffs)}): use another --out, "
                           "or the settings it was trained with")
    # the explainer's periodic checkpoints go beside the set; the trained explainer is published WITH
    # the summary and figures (one set: a kill never leaves one run's explainer beside another's summary)
    partial = partial_checkpoint(out / "explainer.msgpack")
    key = jax.random.key(args.seed)
    k_clf, k_exp = jax.random.split(key)
    clf = fit_classifier(data, key=k_clf, epochs=args.classifier_epochs, checkpoint=ck,
                         progress=not args.quiet, metadata=record)
    if not args.quiet:
        print(f"classifier validation accuracy {clf.val_accuracy:.4f}")
    config = _mnist_config(args)
    with warnings.catch_warnings():  # a plateau is reported below, with the command's options
        warnings.simplefilter("ignore", PlateauWarning)
        exp = explain_digits(data, clf, key=k_exp, config=config, checkpoint=partial, progress=not args.quiet)
    require_trained(exp.fit.steps, exp.fit.nonfinite_step, what="jcausal gce mnist", kept=str(partial))
    s = summary(exp, clf)
    s.update(classes=list(args.classes), seed=args.seed, preset="paper" if args.paper else "default",
             config=dataclasses.asdict(config))
    names = [str(c) for c in args.classes]
    acc = exp.accuracy
    figs = {"flow.png": plot_factor_flow(exp.flows, exp.K),
            "accuracy.png": plot_accuracy_drop(float(acc.original), float(acc.reencoded),
                                               np.asarray(acc.resampled), exp.K),
            "training.png": plot_training(exp.fit.history, lam=args.lam)}
    for i in range(np.asarray(exp.sweep.images).shape[0]):
        figs[f"sweeps_{i}.png"] = plot_sweeps(exp.sweep.images, exp.sweep.probs, exp.sweep.offsets, exp.K,
                                              sample=i, class_names=names)
    fine = exp.fine
    figs["fine_sweep.png"] = plot_fine_sweep(fine.images, fine.probs, fine.offsets, factor=fine.factor,
                                             K=exp.K, class_names=names)
    figs["explainer.msgpack"] = partial.read_bytes()  # the end state of training (the last checkpoint)
    publish(folder, "summary", figs, s)  # summary.json records the explainer's SHA-256 with the others
    partial.unlink(missing_ok=True)
    if exp.plateau is not None:
        p = exp.plateau
        print(f"warning: C stayed below {p.C_max:.2g} nats from step {p.since} to the end: the decoder "
              "ignores z (the plateau), so the factors explain nothing. "
              + ("Drop --paper (the defaults pretrain D and use a Bernoulli likelihood), or "
                 if args.paper else "") + "raise --pretrain-steps or --steps, or lower --lam",
              file=sys.stderr)
    print(json.dumps({k: s[k] for k in ("flow_nats", "accuracy", "steps", "nonfinite_step")}, indent=1))
    print(f"-> {out}/summary.json, flow.png, accuracy.png, sweeps_*.png, fine_sweep.png, training.png")
    return 0


def register(sub) -> None:
    """Add ``jcausal gce`` (with ``linear`` and ``mnist``) to the top-level subparsers."""
    g = sub.add_parser("gce", help="generative causal explanations (GCE paper)",
                       description="Learn latent factors that explain a classifier: a generative map "
                                   "trained on C + lambda D (O'Shaughnessy et al. 2020).")
    gs = g.add_subparsers(dest="gce_command", metavar="EXPERIMENT", required=True)

    lin = command(gs, "linear", help="section 4 demo: linear-Gaussian map, probit linear classifier",
                  description="Train g(alpha, beta) = W [alpha; beta] + eps (unit-norm columns) to "
                              "explain p(Y=1|x) = Phi(a^T x) in R^dim with K = 1, L = dim - 1; "
                              "Proposition 3 predicts w_alpha parallel to a and W_beta orthogonal to "
                              "it. Writes linear.json, linear.png and linear_training.png.",
                  run=_linear, check=_linear_check, out="jcausal-out/gce")
    lin.add_argument("--dim", type=positive_int, default=2, help="data dimension N >= 2" + DEFAULT)
    lin.add_argument("--steps", type=positive_int, default=300, help="training steps (default: %(default)s)")
    lin.add_argument("--lam", type=nonneg_float, default=0.1, help="lambda (default: %(default)s)")
    lin.add_argument("--gamma", type=positive_float, default=0.05, help="noise variance" + DEFAULT)
    lin.add_argument("--steepness", type=positive_float, default=2.0,
                     help="|a|, the classifier's steepness (default: %(default)s)")
    lin.add_argument("--n-alpha", type=positive_int, default=64,
                     help="alpha samples per step (default: %(default)s)")
    lin.add_argument("--n-beta", type=positive_int, default=16,
                     help="beta samples per step (default: %(default)s)")
    lin.add_argument("--lr", type=positive_float, default=0.05,
                     help="Adam learning rate" + DEFAULT)

    mn = command(gs, "mnist", help="section 5: explain a CNN on MNIST digit classes with a VAE",
                 description="Train (or load from --out, when trained with the same --classes, --seed "
                             "and --classifier-epochs) the Table 1 CNN on --classes, then the Table 2 "
                             "VAE explainer with K causal and L noncausal factors. Writes summary.json, "
                             "flow.png, accuracy.png, sweeps_*.png, training.png, and the checkpoints "
                             "classifier.msgpack, explainer.msgpack.",
                 run=_mnist, check=_mnist_check, out="jcausal-out/gce-mnist")
    mn.add_argument("--classes", type=int, nargs="+", default=[3, 8], help="digits (default: 3 8)")
    mn.add_argument("--data", default=None, help="folder of the MNIST IDX files (default: $JCAUSAL_DATA)")
    mn.add_argument("--paper", action="store_true",
                    help="the authors' settings: 8000 steps of plain Monte Carlo at N_alpha = 100, "
                         "N_beta = 25, Adam 5e-4, SSE likelihood, no pretraining (hours on a small CPU); "
                         "options given still override them")
    mn.add_argument("--K", type=positive_int, default=1, help="causal factors (default: %(default)s)")
    mn.add_argument("--L", type=nonneg_int, default=7, help="noncausal factors (default: %(default)s)")
    mn.add_argument("--lam", type=nonneg_float, default=0.05, help="lambda (default: %(default)s)")
    # the help's defaults are GCEMnistConfig()'s (a test keeps them equal; no import of jax here)
    for flag, kind, default, paper, text in MNIST_OPTIONS:
        extra = {"choices": kind} if isinstance(kind, list) else {"type": kind}
        mn.add_argument(flag, default=None, help=f"{text} (default: {default}; --paper: {paper})", **extra)
    mn.add_argument("--batch-size", type=positive_int, default=64, help="VAE batch (default: %(default)s)")
    mn.add_argument("--classifier-epochs", type=positive_int, default=3, help="CNN epochs" + DEFAULT)
    mn.add_argument("--checkpoint-every", type=positive_int, default=200, help="steps (default: %(default)s)")
    mn.add_argument("--flow-samples", type=positive_int, nargs=2, default=[100, 50],
                    metavar=("OUTER", "INNER"),
                    help="draws of each factor and, per draw, of the others in the per-factor flows "
                         "(Figure 5a; the evaluation's largest cost; default: 100 50)")
