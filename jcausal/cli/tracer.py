"""``jcausal tracer``: TRACER's local analysis and global view for the MNIST AlexNet or a breast
cancer MLP (the offline stand-ins for the paper's ImageNet/ResNet-50 and CIC-IDS 2017), and
``jcausal tracer counterfactual mnist|tabular``: the counterfactual GAN, validity and distances, and
the contrastive analysis of a misclassified input."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["register"]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


def _model(args, out: Path, make, x_tr, y_tr, x_val, y_val, tag: str, epochs: int, lr: float):
    import jax

    from jcausal.models import CheckpointMismatchError, accuracy, functional, load, save, train

    model = make()
    ckpt = Path(args.checkpoint) if args.checkpoint else out / f"{tag}.msgpack"
    if ckpt.is_file():
        try:
            load(ckpt, model)
        except CheckpointMismatchError as err:
            raise SystemExit(f"jcausal: {err}") from None
    elif args.checkpoint:
        raise SystemExit(f"jcausal: checkpoint not found: {ckpt}")
    else:
        train(model, x_tr, y_tr, key=jax.random.key(args.seed), epochs=epochs, learning_rate=lr,
              progress=not args.quiet)
        save(ckpt, model)
    apply, params = functional(model)
    return model, ckpt, 100.0 * accuracy(apply, params, x_val, y_val)


def _data(args):
    """``(x_tr, y_tr, x_val, y_val, make_model, tag, epochs, lr, extra)`` for ``mnist`` / ``tabular``."""
    from flax import nnx

    if args.dataset == "mnist":
        from jcausal.data import load_mnist
        from jcausal.models import AlexNetSmall

        try:
            d = load_mnist(args.data, val_fraction=0.2, seed=args.seed)
        except FileNotFoundError as err:
            raise SystemExit(f"jcausal: {err}") from None
        return (d.x_train[..., None], d.y_train, d.x_val[..., None], d.y_val,
                lambda: AlexNetSmall(10, rngs=nnx.Rngs(args.seed)), "mnist_alexnet", args.epochs or 2, 1e-3,
                None)
    from jcausal.data import train_test_split
    from jcausal.models import MLP
    from jcausal.tracer.datasets import load_breast_cancer

    data = load_breast_cancer()
    tr, te = train_test_split(len(data.y), test_size=0.25, seed=args.seed)
    return (data.X[tr], data.y[tr], data.X[te], data.y[te],
            lambda: MLP((30, 64, 32, 2), rngs=nnx.Rngs(args.seed)), "breast_cancer_mlp", args.epochs or 200,
            3e-3, data)


def _counterfactual(args) -> int:
    import argparse

    import jax
    import numpy as np
    from flax import nnx

    from jcausal._src.io import atomic_write_bytes
    from jcausal.models import CheckpointMismatchError, load
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

    args = argparse.Namespace(**{**vars(args), "dataset": args.which or "tabular"})  # a copy: never mutate
    mnist = args.dataset == "mnist"
    k = 10 if mnist else 2
    if args.target is not None and not 0 <= args.target < k:
        raise SystemExit(f"jcausal: --target must be in [0, {k}) for {args.dataset}, got {args.target}")
    if args.count < 1 or args.gan_steps is not None and args.gan_steps < 1:
        raise SystemExit("jcausal: --count and --gan-steps must be >= 1")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise SystemExit(f"jcausal: --min-confidence must be in [0, 1], got {args.min_confidence}")
    lam = args.lam if args.lam is not None else 0.9
    if not 0.0 <= lam <= 1.0:
        raise SystemExit(f"jcausal: --lam must be in [0, 1], got {lam}")
    if args.gan_checkpoint and not Path(args.gan_checkpoint).is_file():
        raise SystemExit(f"jcausal: GAN checkpoint not found: {args.gan_checkpoint}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_val, y_val, make, tag, epochs, lr, data = _data(args)
    model, ckpt, acc = _model(args, out, make, x_tr, y_tr, x_val, y_val, tag, epochs, lr)
    # y* is a model output: x_nn is drawn from the training instances the classifier assigns to y*
    # and, with --min-confidence, assigns with at least that probability (further from the boundary)
    x_mean = np.asarray(x_tr.mean(0), np.float32)
    y_model, p_tr = model_labels(model, x_tr)
    keep = p_tr.max(1) >= args.min_confidence
    if not keep.any():
        raise SystemExit(f"jcausal: no training input reaches --min-confidence {args.min_confidence}")
    x_tr, y_model = x_tr[keep], y_model[keep]
    index = nn_index(x_tr, y_model, k)
    shape = (28, 28, 1) if mnist else (x_tr.shape[1],)
    gan = CounterfactualGAN(k, input_shape=shape, kind="image" if mnist else "tabular",
                            latent=16 if mnist else 8, channels=16, rngs=nnx.Rngs(args.seed))
    gan_ckpt = Path(args.gan_checkpoint) if args.gan_checkpoint else out / f"{args.dataset}_cf_gan.msgpack"
    training = None
    if gan_ckpt.is_file():
        try:
            load(gan_ckpt, gan)
        except CheckpointMismatchError as err:
            raise SystemExit(f"jcausal: {err}") from None
    else:
        steps = args.gan_steps or (3000 if mnist else 1500)
        # squared distance for images: the Euclidean one collapses digits to blank images (measured)
        dist = "squared" if mnist else "euclidean"
        try:
            res = train_gan(gan, x_tr, y_model, key=jax.random.key(args.seed), steps=steps, lam=lam,
                            index=index, batch_size=32 if mnist else 64, distance=dist, checkpoint=gan_ckpt,
                            progress=not args.quiet)
        except ValueError as err:
            raise SystemExit(f"jcausal: {err}") from None
        training = {"steps": res.steps, "training_inputs": int(keep.sum()),
                    "nonfinite_step": res.nonfinite_step,
                    "lam": lam, "distance": dist,
                    "final_g_loss": res.history["g_loss"][-1] if res.history["g_loss"] else None,
                    "final_dist": res.history["dist"][-1] if res.history["dist"] else None}
        if res.nonfinite_step is not None:
            print(f"warning: non-finite loss at step {res.nonfinite_step}; kept the last good parameters "
                  f"({res.steps} steps) in {gan_ckpt}")
    n = min(args.count, len(x_val))
    xs = x_val[:n]
    pred, _ = model_labels(model, xs)
    rng = np.random.default_rng(args.seed)
    targets = (np.full(n, args.target) if args.target is not None
               else (pred + rng.integers(1, k, n)) % k)
    try:
        r = counterfactuals(gan, model, xs, targets, index, x_train=x_tr)
    except ValueError as err:
        raise SystemExit(f"jcausal: {err}") from None
    pfx = f"counterfactual_{args.dataset}"
    names = list(data.feature_names) if data is not None else None
    summary = {"dataset": args.dataset, "checkpoint": str(ckpt), "gan_checkpoint": str(gan_ckpt),
               "test_accuracy": acc, "training": training, **r.to_dict(limit=20)}
    if mnist:
        _save(plot_counterfactuals(r, n=10), out / f"{pfx}_grid.png")
    else:
        summary["changed_features"] = [
            [c._asdict() for c in feature_changes(r.inputs[i], r.counterfactuals[i], data.scaler, names,
                                                  top=8)] for i in range(min(n, 20))]
        _save(plot_feature_changes(feature_changes(r.inputs[0], r.counterfactuals[0], data.scaler, names,
                                                   top=12)), out / f"{pfx}_changes.png")
    all_pred, _ = model_labels(model, x_val)
    wrong = np.flatnonzero(all_pred != np.asarray(y_val))
    if len(wrong):
        i = int(wrong[0])
        kw = (dict(layers=["convs.*", "fcs.*"], patch=args.patch, stride=args.stride) if mnist else
              dict(layers=["layers.*"], baseline_kind="mean", value=x_mean))
        c = contrastive(model, gan, x_val[i], int(y_val[i]), index, x_train=x_tr, eps=args.eps, **kw)
        summary["contrastive"] = {"index": i, **c.to_dict()}
        _save(plot_contrastive(c, feature_names=names), out / f"{pfx}_contrastive.png")
    else:
        summary["contrastive"] = None
    atomic_write_bytes(out / f"{pfx}.json", json.dumps(summary, indent=2).encode())
    s = r.summary()
    print(f"test accuracy {acc:.2f}%; {s['changed']} counterfactuals ({s['unchanged']} inputs already of "
          f"the target returned unchanged)")
    if s["changed"]:
        print(f"validity {s['validity_percent']:.1f}%; mean ||x* - x|| {s['mean_dist_input']:.3f}, "
              f"||x* - x_nn|| {s['mean_dist_nn']:.3f} (||x - x_nn|| {s['mean_dist_input_nn']:.3f})")
    if summary["contrastive"]:
        cd = summary["contrastive"]
        print(f"contrastive: test input {cd['index']} (label {cd['label']}, predicted {cd['prediction']}) "
              f"-> counterfactual predicted {cd['cf_prediction']}")
    print(f"wrote {out / (pfx + '.json')} and figures {pfx}_*.png")
    return 0


def _tracer(args) -> int:
    import numpy as np
    from flax import nnx
    from tqdm.auto import tqdm

    from jcausal._src.io import atomic_write_bytes
    from jcausal.plot.tracer import plot_causal_graph, plot_cka, plot_contributions, plot_coverage
    from jcausal.tracer import explain, global_view, layer_outputs

    if args.dataset == "counterfactual":
        return _counterfactual(args)
    if args.which is not None:
        raise SystemExit(f"jcausal: unexpected argument {args.which!r} after {args.dataset!r}")
    if not 0.0 <= args.eps < 1.0:
        raise SystemExit(f"jcausal: --eps must be in [0, 1), got {args.eps}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=4, desc=f"jcausal tracer {args.dataset}", disable=args.quiet, leave=False)
    if args.dataset == "mnist":
        from jcausal.data import load_mnist
        from jcausal.models import AlexNetSmall

        try:
            d = load_mnist(args.data, val_fraction=0.2, seed=args.seed)
        except FileNotFoundError as err:
            raise SystemExit(f"jcausal: {err}") from None
        x_tr, y_tr, x_val, y_val = d.x_train[..., None], d.y_train, d.x_val[..., None], d.y_val
        layers, names = ["convs.*", "fcs.*"], None
        model, ckpt, acc = _model(args, out, lambda: AlexNetSmall(10, rngs=nnx.Rngs(args.seed)), x_tr, y_tr,
                                  x_val, y_val, "mnist_alexnet", args.epochs or 2, 1e-3)
        kw = dict(patch=args.patch, stride=args.stride)
    else:
        from jcausal.data import train_test_split
        from jcausal.models import MLP
        from jcausal.tracer.datasets import load_breast_cancer

        data = load_breast_cancer()
        tr, te = train_test_split(len(data.y), test_size=0.25, seed=args.seed)
        x_tr, y_tr, x_val, y_val = data.X[tr], data.y[tr], data.X[te], data.y[te]
        layers, names = ["layers.*"], list(data.feature_names)
        model, ckpt, acc = _model(args, out, lambda: MLP((30, 64, 32, 2), rngs=nnx.Rngs(args.seed)), x_tr,
                                  y_tr, x_val, y_val, "breast_cancer_mlp", args.epochs or 200, 3e-3)
        # the neutral point of min-max scaled data is the training mean, not 0 (section 3.2.1)
        kw = dict(baseline_kind="mean", value=np.asarray(x_tr.mean(0), np.float32))
    steps.update()
    steps.set_postfix_str("local analysis")
    lo = layer_outputs(model, x_val[0], layers=layers)
    i = int(args.index)
    if not 0 <= i < len(x_val):
        raise SystemExit(f"jcausal: --index must be in [0, {len(x_val)})")
    ex = explain(lo, x_val[i], eps=args.eps, **kw)
    tag = f"tracer_{args.dataset}"
    _save(plot_cka(ex.graph), out / f"{tag}_cka.png")
    _save(plot_causal_graph(ex.graph), out / f"{tag}_graph.png")
    img = np.asarray(x_val[i]) if args.dataset == "mnist" else None
    _save(plot_contributions(ex, img, feature_names=names), out / f"{tag}_contributions.png")
    steps.update()
    summary = {"dataset": args.dataset, "checkpoint": str(ckpt), "test_accuracy": acc, "index": i,
               "label": int(y_val[i]), "eps": args.eps, "local": ex.to_dict()}
    if args.dataset == "tabular":
        summary["local"]["top_features"] = [
            [names[j] for j in np.argsort(-np.abs(c.features))[:5]] for c in ex.contributions]
    steps.set_postfix_str("global view")
    if args.dataset == "mnist":
        gv = global_view(lo, x_val, y_val, per_class=args.per_class, patch=args.patch, stride=args.stride,
                         eps=args.eps, progress=not args.quiet)
        _save(plot_coverage(gv), out / f"{tag}_coverage.png")
        summary["global"] = gv.to_dict()
    steps.update(2)
    steps.close()
    atomic_write_bytes(out / f"{tag}.json", json.dumps(summary, indent=2).encode())
    g = ex.graph
    print(f"test accuracy {acc:.2f}%; input {i} (label {int(y_val[i])}) -> class {ex.target} "
          f"({100 * ex.probs[ex.target]:.1f}%)")
    print(f"causal mechanism: {g.num_nodes} nodes {g.node_names()}, links {list(g.links)}")
    if "global" in summary:
        for m in summary["global"]["mechanisms"][:5]:
            print(f"  {m['coverage']:5.1f}%  {m['num_nodes']} nodes  {m['groups']}")
    print(f"wrote {out / (tag + '.json')} and figures {tag}_*.png")
    return 0


def register(sub) -> None:
    """Add ``jcausal tracer`` to the top-level subparsers."""
    p = sub.add_parser(
        "tracer", help="TRACER causal mechanisms (layer groups, links, signed contributions)",
        description="Interventions, CKA between layers, causal nodes and links, signed feature "
                    "contributions per node, and (mnist) the global view with coverage. Trains the "
                    "reference model into --out when no --checkpoint is given.")
    p.add_argument("dataset", choices=["mnist", "tabular", "counterfactual"],
                   help="'mnist': AlexNetSmall on the MNIST test-set IDX files (--data); 'tabular': an "
                        "MLP on scikit-learn's bundled breast cancer data; 'counterfactual mnist|tabular': "
                        "train (or load) the counterfactual GAN, report validity and distances, and the "
                        "contrastive analysis of the first misclassified test input")
    p.add_argument("which", nargs="?", choices=["mnist", "tabular"],
                   help="with 'counterfactual': the dataset (default tabular)")
    p.add_argument("--data", default=None, help="MNIST IDX folder (default: $JCAUSAL_DATA)")
    p.add_argument("--checkpoint", help="model parameters saved with jcausal.models.save")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (mnist 2, tabular 200)")
    p.add_argument("--index", type=int, default=0, help="test input to explain (default: %(default)s)")
    p.add_argument("--eps", type=float, default=0.05, help="merge threshold: CKA >= 1 - eps")
    p.add_argument("--patch", type=int, default=4, help="mnist patch size (default: %(default)s)")
    p.add_argument("--stride", type=int, default=2, help="mnist patch stride (default: %(default)s)")
    p.add_argument("--per-class", type=int, default=20, help="mnist global view: digits per class")
    p.add_argument("--gan-checkpoint", help="counterfactual: a saved CounterfactualGAN (else trained into "
                   "--out, or loaded from there)")
    p.add_argument("--gan-steps", type=int, default=None, help="counterfactual: GAN steps (mnist 3000, "
                   "tabular 1500)")
    p.add_argument("--lam", type=float, default=None, help="counterfactual: lambda of (1 - lambda) L_GAN + "
                   "lambda d(x*, x_nn) (default 0.9; d is squared Euclidean for mnist)")
    p.add_argument("--target", type=int, default=None, help="counterfactual: one target class for every "
                   "input (default: a random class other than the prediction)")
    p.add_argument("--min-confidence", type=float, default=0.99,
                   help="counterfactual: x_nn only among training inputs the classifier assigns with at "
                        "least this probability (default: %(default)s)")
    p.add_argument("--count", type=int, default=200,
                   help="counterfactual: test inputs (default: %(default)s)")
    p.add_argument("--out", default="jcausal-out", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_tracer)
