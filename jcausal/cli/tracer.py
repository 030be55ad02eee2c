"""``jcausal tracer mnist|tabular``: TRACER's local analysis and global view for the MNIST AlexNet or
a breast cancer MLP (the offline stand-ins for the paper's ImageNet/ResNet-50 and CIC-IDS 2017), and
``jcausal tracer counterfactual mnist|tabular``: the counterfactual GAN, validity and distances, and
the contrastive analysis of a misclassified input. Every command runs through
:mod:`jcausal.cli.core` (checks first, locked ``--out``, files published together)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

from jcausal.cli.core import (
    CLIError,
    command,
    fraction,
    nonneg_int,
    positive_int,
    publish,
    require_trained,
    reuse_checkpoint,
)

__all__ = ["register"]

MNIST_SIDE = 28


class Task(NamedTuple):
    """The data and reference model of ``mnist`` / ``tabular``, loaded by the checks."""

    x_tr: object
    y_tr: object
    x_val: object
    y_val: object
    make: object  # () -> a fresh model
    tag: str  # checkpoint name
    epochs: int
    lr: float
    data: object  # the tabular data set (feature names, scaler) or None


def _task(args, dataset: str) -> Task:
    from flax import nnx

    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise CLIError(f"--checkpoint not found: {args.checkpoint}")
    if dataset == "mnist":
        from jcausal.data import load_mnist
        from jcausal.models import AlexNetSmall

        try:
            d = load_mnist(args.data, val_fraction=0.2, seed=args.seed)
        except (FileNotFoundError, ValueError) as err:
            raise CLIError(f"MNIST not found or unreadable ({err}); pass --data FOLDER with the IDX "
                           "files") from None
        return Task(d.x_train[..., None], d.y_train, d.x_val[..., None], d.y_val,
                    lambda: AlexNetSmall(10, rngs=nnx.Rngs(args.seed)), "mnist_alexnet", args.epochs or 2,
                    1e-3, None)
    from jcausal.data import train_test_split
    from jcausal.models import MLP
    from jcausal.tracer.datasets import load_breast_cancer

    data = load_breast_cancer()
    tr, te = train_test_split(len(data.y), test_size=0.25, seed=args.seed)
    return Task(data.X[tr], data.y[tr], data.X[te], data.y[te],
                lambda: MLP((30, 64, 32, 2), rngs=nnx.Rngs(args.seed)), "breast_cancer_mlp",
                args.epochs or 200, 3e-3, data)


def _model(args, out: Path, t: Task):
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


def _explain(args, folder, t: Task, dataset: str) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from jcausal.plot.tracer import plot_causal_graph, plot_cka, plot_contributions, plot_coverage
    from jcausal.tracer import explain, global_view, layer_outputs

    out = Path(args.out)
    steps = tqdm(total=4, desc=f"jcausal tracer {dataset}", disable=args.quiet, leave=False)
    model, ckpt, sha, acc = _model(args, out, t)
    if dataset == "mnist":
        layers, names, kw = ["convs.*", "fcs.*"], None, dict(patch=args.patch, stride=args.stride)
    else:
        layers, names = ["layers.*"], list(t.data.feature_names)
        # the neutral point of min-max scaled data is the training mean, not 0 (section 3.2.1)
        kw = dict(baseline_kind="mean", value=np.asarray(t.x_tr.mean(0), np.float32))
    steps.update()
    steps.set_postfix_str("local analysis")
    lo = layer_outputs(model, t.x_val[0], layers=layers)
    i = int(args.index)
    ex = explain(lo, t.x_val[i], eps=args.eps, **kw)
    tag = f"tracer_{dataset}"
    img = np.asarray(t.x_val[i]) if dataset == "mnist" else None
    figs = {f"{tag}_cka.png": plot_cka(ex.graph), f"{tag}_graph.png": plot_causal_graph(ex.graph),
            f"{tag}_contributions.png": plot_contributions(ex, img, feature_names=names)}
    steps.update()
    summary = {"dataset": dataset, "checkpoint": str(ckpt), "checkpoint_sha256": sha, "seed": args.seed,
               "test_accuracy": acc, "index": i, "label": int(t.y_val[i]), "eps": args.eps,
               "local": ex.to_dict()}
    if dataset == "tabular":
        summary["local"]["top_features"] = [
            [names[j] for j in np.argsort(-np.abs(c.features))[:5]] for c in ex.contributions]
    steps.set_postfix_str("global view")
    if dataset == "mnist":
        gv = global_view(lo, t.x_val, t.y_val, per_class=args.per_class, patch=args.patch,
                         stride=args.stride, eps=args.eps, progress=not args.quiet)
        figs[f"{tag}_coverage.png"] = plot_coverage(gv)
        summary["global"] = gv.to_dict()
    steps.update(2)
    steps.close()
    publish(folder, tag, figs, summary)
    g = ex.graph
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
    if dataset == "tabular":
        _constraints(args, t)  # unknown names and empty ranges are refused before any training
    return t


def _constraints(args, t: Task) -> dict:
    """``--immutable`` and ``--range`` as the keyword arguments of ``counterfactuals``."""
    from jcausal.tracer import make_constraints

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
        make_constraints(len(names), **kw)
    except ValueError as err:
        raise CLIError(f"--immutable/--range: {err}") from None
    return kw


def _counterfactual(args, folder, t: Task, dataset: str) -> int:
    import jax
    import numpy as np
    from flax import nnx

    from jcausal.models import load, save
    from jcausal.plot.counterfactual import plot_contrastive, plot_counterfactuals, plot_feature_changes
    from jcausal.tracer import (
        CounterfactualGAN,
        contrastive,
        counterfactuals,
        feature_changes,
        model_labels,
        nn_index,
        train_gan,
    )

    mnist = dataset == "mnist"
    k = 10 if mnist else 2
    lam = args.lam if args.lam is not None else 0.9
    out = Path(args.out)
    model, ckpt, sha, acc = _model(args, out, t)
    x_tr, x_val, y_val = t.x_tr, t.x_val, t.y_val
    # y* is a model output: x_nn is drawn from the training instances the classifier assigns to y*
    # and, with --min-confidence, assigns with at least that probability (further from the boundary)
    x_mean = np.asarray(x_tr.mean(0), np.float32)
    y_model, p_tr = model_labels(model, x_tr)
    keep = p_tr.max(1) >= args.min_confidence
    if not keep.any():
        raise CLIError(f"no training input reaches --min-confidence {args.min_confidence} (the most "
                       f"confident is {p_tr.max():.3f}): lower --min-confidence, or train longer with "
                       "--epochs (the classifier is kept in --out)")
    x_tr, y_model = x_tr[keep], y_model[keep]
    index = nn_index(x_tr, y_model, k)
    shape = (MNIST_SIDE, MNIST_SIDE, 1) if mnist else (x_tr.shape[1],)
    gan = CounterfactualGAN(k, input_shape=shape, kind="image" if mnist else "tabular",
                            latent=16 if mnist else 8, channels=16, rngs=nnx.Rngs(args.seed))
    steps = args.gan_steps or (3000 if mnist else 1500)
    # squared distance for images: the Euclidean one collapses digits to blank images (measured)
    dist = "squared" if mnist else "euclidean"
    training = None
    if args.gan_checkpoint:
        gan_ckpt = Path(args.gan_checkpoint)
        try:
            load(gan_ckpt, gan)
        except Exception as err:
            raise CLIError(f"--gan-checkpoint {gan_ckpt}: {err}") from None
    else:
        gan_ckpt = out / f"{dataset}_cf_gan.msgpack"
        record = {"classifier_sha256": sha, "seed": args.seed, "gan_steps": steps, "lam": lam,
                  "min_confidence": args.min_confidence}
        if not reuse_checkpoint(gan_ckpt, gan, record,
                                remedy="use another --out, or the settings it was trained with"):
            res = train_gan(gan, x_tr, y_model, key=jax.random.key(args.seed), steps=steps, lam=lam,
                            index=index, batch_size=32 if mnist else 64, distance=dist, checkpoint=gan_ckpt,
                            progress=not args.quiet)
            require_trained(res.steps, res.nonfinite_step, what="the counterfactual GAN", kept=str(gan_ckpt))
            save(gan_ckpt, gan, metadata=record)
            training = {"steps": res.steps, "training_inputs": int(keep.sum()),
                        "nonfinite_step": res.nonfinite_step, "lam": lam, "distance": dist,
                        "final_g_loss": res.history["g_loss"][-1] if res.history["g_loss"] else None,
                        "final_dist": res.history["dist"][-1] if res.history["dist"] else None}
    n = min(args.count, len(x_val))
    xs = x_val[:n]
    pred, _ = model_labels(model, xs)
    rng = np.random.default_rng(args.seed)
    targets = (np.full(n, args.target) if args.target is not None
               else (pred + rng.integers(1, k, n)) % k)
    kw = _constraints(args, t) if not mnist else {}
    r = counterfactuals(gan, model, xs, targets, index, x_train=x_tr, num=args.num,
                        key=jax.random.key(args.seed), **kw)
    pfx = f"counterfactual_{dataset}"
    names = list(t.data.feature_names) if t.data is not None else None
    summary = {"dataset": dataset, "checkpoint": str(ckpt), "checkpoint_sha256": sha, "seed": args.seed,
               "gan_checkpoint": str(gan_ckpt), "test_accuracy": acc, "training": training,
               "immutable": kw.get("immutable"), "ranges": kw.get("ranges"), "num": args.num,
               **r.to_dict(limit=20)}
    figs = {}
    if mnist:
        figs[f"{pfx}_grid.png"] = plot_counterfactuals(r, n=10)
    else:
        summary["changed_features"] = [
            [c._asdict() for c in feature_changes(r.inputs[i], r.counterfactuals[i], t.data.scaler, names,
                                                  top=8)] for i in range(min(n, 20))]
        figs[f"{pfx}_changes.png"] = plot_feature_changes(
            feature_changes(r.inputs[0], r.counterfactuals[0], t.data.scaler, names, top=12))
    all_pred, _ = model_labels(model, x_val)
    wrong = np.flatnonzero(all_pred != np.asarray(y_val))
    summary["contrastive"] = None
    if len(wrong):
        i = int(wrong[0])
        kw = (dict(layers=["convs.*", "fcs.*"], patch=args.patch, stride=args.stride) if mnist else
              dict(layers=["layers.*"], baseline_kind="mean", value=x_mean))
        c = contrastive(model, gan, x_val[i], int(y_val[i]), index, x_train=x_tr, eps=args.eps, **kw)
        summary["contrastive"] = {"index": i, **c.to_dict()}
        figs[f"{pfx}_contrastive.png"] = plot_contrastive(c, feature_names=names)
    publish(folder, pfx, figs, summary)
    s = r.summary()
    print(f"test accuracy {acc:.2f}%; {s['changed']} counterfactuals ({s['unchanged']} inputs already of "
          f"the target returned unchanged)")
    if s["changed"]:
        print(f"validity {s['validity_percent']:.1f}%; mean ||x* - x|| {s['mean_dist_input']:.3f}, "
              f"||x* - x_nn|| {s['mean_dist_nn']:.3f} (||x - x_nn|| {s['mean_dist_input_nn']:.3f}); "
              f"features changed {s.get('mean_features_changed', float('nan')):.2f} on average")
        if args.num > 1:
            print(f"{args.num} counterfactuals per input: all valid and distinct for "
                  f"{s.get('all_valid_distinct_percent', float('nan')):.1f}% of inputs, mean pairwise "
                  f"distance {s.get('mean_diversity', float('nan')):.3f}")
    if summary["contrastive"]:
        cd = summary["contrastive"]
        print(f"contrastive: test input {cd['index']} (label {cd['label']}, predicted {cd['prediction']}) "
              f"-> counterfactual predicted {cd['cf_prediction']}")
    print(f"wrote {out / (pfx + '.json')} and figures {pfx}_*.png")
    return 0


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
        else:
            c.set_defaults(immutable=None, range=None)
