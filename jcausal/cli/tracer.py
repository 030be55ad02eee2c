"""``jcausal tracer``: TRACER's local analysis and global view for the MNIST AlexNet or a breast
cancer MLP (the offline stand-ins for the paper's ImageNet/ResNet-50 and CIC-IDS 2017)."""

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


def _tracer(args) -> int:
    import numpy as np
    from flax import nnx
    from tqdm.auto import tqdm

    from jcausal._src.io import atomic_write_bytes
    from jcausal.plot.tracer import plot_causal_graph, plot_cka, plot_contributions, plot_coverage
    from jcausal.tracer import explain, global_view, layer_outputs

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
    p.add_argument("dataset", choices=["mnist", "tabular"],
                   help="'mnist': AlexNetSmall on the MNIST test-set IDX files (--data); 'tabular': an "
                        "MLP on scikit-learn's bundled breast cancer data")
    p.add_argument("--data", default=None, help="MNIST IDX folder (default: $JCAUSAL_DATA)")
    p.add_argument("--checkpoint", help="model parameters saved with jcausal.models.save")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (mnist 2, tabular 200)")
    p.add_argument("--index", type=int, default=0, help="test input to explain (default: %(default)s)")
    p.add_argument("--eps", type=float, default=0.05, help="merge threshold: CKA >= 1 - eps")
    p.add_argument("--patch", type=int, default=4, help="mnist patch size (default: %(default)s)")
    p.add_argument("--stride", type=int, default=2, help="mnist patch stride (default: %(default)s)")
    p.add_argument("--per-class", type=int, default=20, help="mnist global view: digits per class")
    p.add_argument("--out", default="jcausal-out", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_tracer)
