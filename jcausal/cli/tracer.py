"""``jcausal tracer mnist|tabular``: TRACER's local analysis and global view for the MNIST AlexNet or
a breast cancer MLP (the offline stand-ins for the paper's ImageNet/ResNet-50 and CIC-IDS 2017), and
``jcausal tracer counterfactual mnist|tabular``: the counterfactual GAN, validity and distances, and
the contrastive analysis of a misclassified input. Every command runs through
:mod:`jcausal.cli.core` (checks first, locked ``--out``, files published together)."""

from __future__ import annotations

import argparse
from pathlib import Path

from jcausal.cli.core import (
    CLIError,
    command,
    finish_checkpoint,
    fraction,
    nonneg_int,
    partial_checkpoint,
    positive_int,
    publish,
    require_trained,
    reuse_checkpoint,
)

__all__ = ["register"]

MNIST_SIDE = 28  # as in jcausal.experiments.tracer_tasks; the CLI module imports no numpy


def _task(args, dataset: str):
    """The :class:`jcausal.experiments.tracer_tasks.Task` of ``dataset`` (data loaded, model not built)."""
    from jcausal.experiments.tracer_tasks import mnist_task, tabular_task

    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise CLIError(f"--checkpoint not found: {args.checkpoint}")
    if dataset == "mnist":
        try:
            return mnist_task(args.data, seed=args.seed, epochs=args.epochs)
        except (FileNotFoundError, ValueError) as err:
            raise CLIError(f"MNIST not found or unreadable ({err}); pass --data FOLDER with the IDX "
                           "files") from None
    return tabular_task(seed=args.seed, epochs=args.epochs)


def _model(args, out: Path, t):
    """The reference model: ``--checkpoint``, or the one trained into ``--out`` with the same
    settings (refused when its recorded seed/epochs differ), or trained now and saved there."""
    import jax

    from jcausal._src.io import file_sha256
    from jcausal.models import accuracy, functional, load, save, train

    model = t.make()
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        try:
            load(ckpt, model)
        except Exception as err:  # a checkpoint of another model, or no checkpoint at all
            raise CLIError(f"--checkpoint {ckpt}: {err}") from None
    else:
        ckpt = out / f"{t.tag}.msgpack"
        record = {"dataset": t.tag, "seed": args.seed, "epochs": t.epochs}
        if not reuse_checkpoint(ckpt, model, record,
                                remedy="use another --out, or the --seed/--epochs it was trained with"):
            res = train(model, t.x_tr, t.y_tr, key=jax.random.key(args.seed), epochs=t.epochs,
                        learning_rate=t.lr, progress=not args.quiet)
            losses = res.history.get("loss", [])
            require_trained(len(losses), None, what=f"training {t.tag}")
            save(ckpt, model, metadata=record)
    apply, params = functional(model)
    return model, ckpt, file_sha256(ckpt), 100.0 * accuracy(apply, params, t.x_val, t.y_val)


# ------------------------------------------------------------------------------- tracer mnist|tabular


def _check_explain(args, dataset):
    if not 0.0 <= args.eps < 1.0:
        raise CLIError(f"--eps must be in [0, 1), got {args.eps}")
    if dataset == "mnist" and args.patch > MNIST_SIDE:
        raise CLIError(f"--patch {args.patch} is larger than the {MNIST_SIDE}x{MNIST_SIDE} image")
    t = _task(args, dataset)
    if not 0 <= args.index < len(t.x_val):
        raise CLIError(f"--index must be in [0, {len(t.x_val)}) (the test inputs), got {args.index}")
    return t


def _explain(args, folder, t, dataset: str) -> int:
    from jcausal.experiments.tracer_mnist import run_tracer_mnist
    from jcausal.experiments.tracer_tabular import run_tracer_tabular

    out = Path(args.out)
    model, ckpt, sha, acc = _model(args, out, t)
    i = int(args.index)
    if dataset == "mnist":
        run = run_tracer_mnist(model, t, index=i, patch=args.patch, stride=args.stride, eps=args.eps,
                               per_class=args.per_class, progress=not args.quiet)
    else:
        run = run_tracer_tabular(model, t, index=i, eps=args.eps, progress=not args.quiet)
    tag = f"tracer_{dataset}"
    summary = {"dataset": dataset, "checkpoint": str(ckpt), "checkpoint_sha256": sha, "seed": args.seed,
               "test_accuracy": acc, **run.summary}
    publish(folder, tag, run.figures, summary)
    ex, g = run.result, run.result.graph
    print(f"test accuracy {acc:.2f}%; input {i} (label {int(t.y_val[i])}) -> class {ex.target} "
          f"({100 * ex.probs[ex.target]:.1f}%)")
    print(f"causal mechanism: {g.num_nodes} nodes {g.node_names()}, links {list(g.links)}")
    if "global" in summary:
        for m in summary["global"]["mechanisms"][:5]:
            print(f"  {m['coverage']:5.1f}%  {m['num_nodes']} nodes  {m['groups']}")
    print(f"wrote {out / (tag + '.json')} and figures {tag}_*.png")
    return 0


# ------------------------------------------------------------------- tracer counterfactual mnist|tabular


def _check_counterfactual(args, dataset):
    k = 10 if dataset == "mnist" else 2
    if args.target is not None and not 0 <= args.target < k:
        raise CLIError(f"--target must be in [0, {k}) for {dataset}, got {args.target}")
    if args.lam is not None and not 0.0 <= args.lam <= 1.0:
        raise CLIError(f"--lam must be in [0, 1], got {args.lam}")
    if not 0.0 <= args.eps < 1.0:
        raise CLIError(f"--eps must be in [0, 1), got {args.eps}")
    if dataset == "mnist" and args.patch > MNIST_SIDE:
        raise CLIError(f"--patch {args.patch} is larger than the {MNIST_SIDE}x{MNIST_SIDE} image")
    if args.gan_checkpoint and not Path(args.gan_checkpoint).is_file():
        raise CLIError(f"--gan-checkpoint not found: {args.gan_checkpoint}")
    t = _task(args, dataset)
    if dataset == "tabular":  # unknown names, empty ranges and ranges that exclude an immutable
        # feature's value in one of the inputs are refused before any training
        _constraints(args, t, inputs=t.x_val[:args.count])
    return t


def _constraints(args, t, inputs=None) -> dict:
    """``--immutable`` and ``--range`` as the keyword arguments of ``counterfactuals``, checked
    against the ``inputs`` to explain when given."""
    from jcausal.tracer import make_constraints
    from jcausal.tracer.constraints import check_immutable_in_range

    names = list(t.data.feature_names)
    immutable = [n.strip() for spec in (args.immutable or []) for n in spec.split(",") if n.strip()]
    ranges = {}
    for spec in args.range or []:
        name, _, bounds = spec.rpartition(":")
        name, _, low = name.rpartition(":")
        try:
            lo, hi = (None if v.strip() in ("", "-") else float(v) for v in (low, bounds))
        except ValueError:
            raise CLIError(f"--range {spec!r}: expected NAME:LOW:HIGH with numbers (empty for an open "
                           "side)") from None
        if not name:
            raise CLIError(f"--range {spec!r}: expected NAME:LOW:HIGH")
        ranges[name] = (lo, hi)
    kw = {"immutable": immutable or None, "ranges": ranges or None, "feature_names": names,
          "scaler": t.data.scaler}
    try:
        cons = make_constraints(len(names), **kw)
        if inputs is not None:
            check_immutable_in_range(cons, inputs)
    except ValueError as err:
        raise CLIError(f"--immutable/--range: {err}") from None
    return kw


def _gan(args, out: Path, model, t, dataset: str, sha: str):
    """The counterfactual GAN: ``--gan-checkpoint``, or the one trained into ``--out`` with the same
    settings, or trained now and saved there; returns ``(setup, checkpoint, training summary or None)``."""
    from jcausal.experiments.counterfactuals import NoConfidentInputs, fit_gan, gan_setup, training_summary
    from jcausal.models import load

    try:
        setup = gan_setup(model, t, mnist=dataset == "mnist", seed=args.seed,
                          min_confidence=args.min_confidence, steps=args.gan_steps, lam=args.lam)
    except NoConfidentInputs as err:
        raise CLIError(f"no training input reaches --min-confidence {args.min_confidence} (the most "
                       f"confident is {err.top:.3f}): lower --min-confidence, or train longer with "
                       "--epochs (the classifier is kept in --out)") from None
    if args.gan_checkpoint:
        gan_ckpt = Path(args.gan_checkpoint)
        try:
            load(gan_ckpt, setup.gan)
        except Exception as err:
            raise CLIError(f"--gan-checkpoint {gan_ckpt}: {err}") from None
        return setup, gan_ckpt, None
    gan_ckpt = out / f"{dataset}_cf_gan.msgpack"
    record = {"classifier_sha256": sha, "seed": args.seed, "gan_steps": setup.steps, "lam": setup.lam,
              "min_confidence": args.min_confidence}
    if reuse_checkpoint(gan_ckpt, setup.gan, record,
                        remedy="use another --out, or the settings it was trained with"):
        return setup, gan_ckpt, None
    partial = partial_checkpoint(gan_ckpt)
    res = fit_gan(setup, seed=args.seed, checkpoint=partial, progress=not args.quiet)
    require_trained(res.steps, res.nonfinite_step, what="the counterfactual GAN", kept=str(partial))
    finish_checkpoint(gan_ckpt, setup.gan, record)
    return setup, gan_ckpt, training_summary(setup, res)


def _counterfactual(args, folder, t, dataset: str) -> int:
    from jcausal.experiments.counterfactuals import describe, evaluate

    mnist = dataset == "mnist"
    out = Path(args.out)
    model, ckpt, sha, acc = _model(args, out, t)
    setup, gan_ckpt, training = _gan(args, out, model, t, dataset, sha)
    kw = _constraints(args, t) if not mnist else {}
    cont = dict(eps=args.eps, patch=args.patch, stride=args.stride) if mnist else dict(eps=args.eps)
    r, found, figs = evaluate(model, setup, t, seed=args.seed, count=args.count, target=args.target,
                              num=args.num, constraints=kw, contrastive_kw=cont,
                              on_unreachable="keep" if args.keep_unreachable else "raise")
    pfx = f"counterfactual_{dataset}"
    figs[f"{pfx}.npz"] = _result_npz(r)  # every input and every alternative (the JSON shows a few)
    summary = {"dataset": dataset, "checkpoint": str(ckpt), "checkpoint_sha256": sha, "seed": args.seed,
               "gan_checkpoint": str(gan_ckpt), "test_accuracy": acc, "training": training, **found}
    publish(folder, pfx, figs, summary)
    lines = describe(r, summary, args.num)
    print(f"test accuracy {acc:.2f}%; {lines[0]}")
    for line in lines[1:]:
        print(line)
    print(f"wrote {out / (pfx + '.json')}, every counterfactual in {pfx}.npz and figures {pfx}_*.png")
    return 0


def _result_npz(r) -> bytes:
    """A :class:`jcausal.tracer.CounterfactualResult` as ``.npz`` bytes: every field, the messages
    as strings (no pickle)."""
    import io

    import numpy as np

    arrays = {k: np.asarray(v) for k, v in r._asdict().items() if v is not None and k != "messages"}
    arrays["messages"] = np.asarray(r.messages, dtype=str)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ registration


def _common(p: argparse.ArgumentParser, dataset: str) -> None:
    if dataset == "mnist":
        p.add_argument("--data", default=None, help="MNIST IDX folder (default: $JCAUSAL_DATA)")
        p.add_argument("--patch", type=positive_int, default=4, help="patch size (default: %(default)s)")
        p.add_argument("--stride", type=positive_int, default=2, help="patch stride (default: %(default)s)")
    else:
        p.set_defaults(data=None, patch=None, stride=None)
    p.add_argument("--checkpoint", help="the classifier's parameters saved with jcausal.models.save "
                                        "(default: trained into --out, or reused from there when it was "
                                        "trained with the same --seed and --epochs)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"training epochs (default: {2 if dataset == 'mnist' else 200})")
    p.add_argument("--eps", type=float, default=0.05, help="merge threshold: CKA >= 1 - eps, in [0, 1)")


def _bind(fn, check, dataset):
    return (lambda args, folder, prepared: fn(args, folder, prepared, dataset),
            lambda args: check(args, dataset))


def register(sub) -> None:
    """Add ``jcausal tracer`` to the top-level subparsers."""
    p = sub.add_parser(
        "tracer", help="TRACER causal mechanisms (layer groups, links, signed contributions)",
        description="Interventions, CKA between layers, causal nodes and links, signed feature "
                    "contributions per node, and (mnist) the global view with coverage; or the "
                    "counterfactual GAN. Trains the reference model into --out when no --checkpoint "
                    "is given.")
    ts = p.add_subparsers(dest="tracer_command", metavar="TASK", required=True)
    for dataset, what in (("mnist", "AlexNetSmall on the MNIST test-set IDX files (--data)"),
                          ("tabular", "an MLP on scikit-learn's bundled breast cancer data")):
        run, check = _bind(_explain, _check_explain, dataset)
        c = command(ts, dataset, help=f"local analysis and global view: {what}",
                    description=f"TRACER on {what}: causal nodes, links and contributions for test input "
                                "--index" + (", and the global view" if dataset == "mnist" else ""),
                    run=run, check=check, out="jcausal-out")
        _common(c, dataset)
        c.add_argument("--index", type=nonneg_int, default=0,
                       help="test input to explain (default: %(default)s)")
        if dataset == "mnist":
            c.add_argument("--per-class", type=positive_int, default=20, help="global view: digits per class")
    cf = ts.add_parser("counterfactual", help="the counterfactual GAN: validity, distances, contrastive "
                                              "analysis",
                       description="Train (or load) the counterfactual GAN, report validity and distances, "
                                   "and the contrastive analysis of the first misclassified test input.")
    cs = cf.add_subparsers(dest="cf_dataset", metavar="DATASET", required=True)
    for dataset in ("mnist", "tabular"):
        run, check = _bind(_counterfactual, _check_counterfactual, dataset)
        c = command(cs, dataset, help=f"counterfactuals of the {dataset} classifier",
                    description=f"Counterfactual GAN for the {dataset} classifier (TRACER section 3.4).",
                    run=run, check=check, out="jcausal-out")
        _common(c, dataset)
        c.add_argument("--gan-checkpoint", help="a saved CounterfactualGAN (default: trained into --out, or "
                                                "reused from there when trained with the same settings)")
        c.add_argument("--gan-steps", type=positive_int, default=None,
                       help=f"GAN steps (default: {3000 if dataset == 'mnist' else 1500})")
        c.add_argument("--lam", type=float, default=None, help="lambda of (1 - lambda) L_GAN + lambda "
                       "d(x*, x_nn), in [0, 1] (default 0.9; d is squared Euclidean for mnist)")
        c.add_argument("--target", type=int, default=None, help="one target class for every input "
                       "(default: a random class other than the prediction)")
        c.add_argument("--min-confidence", type=fraction, default=0.99,
                       help="x_nn only among training inputs the classifier assigns with at least this "
                            "probability (default: %(default)s)")
        c.add_argument("--count", type=positive_int, default=200, help="test inputs (default: %(default)s)")
        c.add_argument("--num", type=positive_int, default=1,
                       help="counterfactuals per input, pairwise different (default: %(default)s)")
        if dataset == "tabular":
            c.add_argument("--immutable", action="append", metavar="NAME[,NAME...]",
                           help="features a counterfactual must keep at the input's value (repeatable)")
            c.add_argument("--range", action="append", metavar="NAME:LOW:HIGH",
                           help="allowed values of a feature in the data's own units (repeatable; "
                                "leave LOW or HIGH empty for an open side)")
            c.add_argument("--keep-unreachable", action="store_true",
                           help="an input whose target no search reaches under the constraints comes back "
                                "marked invalid (with a message) instead of stopping the run")
        else:
            c.set_defaults(immutable=None, range=None, keep_unreachable=False)
