"""``jcausal ace``: Phase I + Phase II ACE for the Iris MLP or a user's MLP checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from jcausal.cli.train import _fit_iris_mlp

__all__ = ["register"]


def _rank(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def _load_matrix(path: Path):
    import numpy as np

    if not path.is_file():
        raise SystemExit(f"jcausal: data file not found: {path}")
    if path.suffix == ".npy":
        X = np.load(path, allow_pickle=False)
    else:
        X = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    if X.ndim != 2:
        raise SystemExit(f"jcausal: {path} must hold a 2-d array (rows, features), got shape {X.shape}")
    return X.astype(np.float32)


def _ace(args) -> int:
    import jax
    import numpy as np
    from flax import nnx
    from tqdm.auto import tqdm

    from jcausal._src.io import atomic_write_bytes
    from jcausal.ace import explain, save_result
    from jcausal.models import MLP, functional, load
    from jcausal.models.checkpoint import CheckpointMismatchError
    from jcausal.plot import plot_causal_regressors

    out = Path(args.out)
    steps = tqdm(total=4, desc="jcausal ace", disable=args.quiet, leave=False)
    if args.dataset == "iris":
        from jcausal.data import load_iris, train_test_split

        data = load_iris()
        tr, _ = train_test_split(len(data.y), test_size=30, seed=args.seed)
        X = data.X[tr]
        sizes = tuple(args.sizes or (4, 8, 3))
        feature_names, output_names = list(data.feature_names), list(data.target_names)
        ckpt = Path(args.checkpoint) if args.checkpoint else out / "iris_mlp.msgpack"
        if not args.checkpoint and not ckpt.is_file():  # a named checkpoint must exist
            steps.set_postfix_str("training the Iris MLP")
            _fit_iris_mlp(out, sizes[1:-1], args.activation, epochs=300, lr=1e-2, seed=args.seed,
                          progress=False)
    else:
        if not (args.data and args.checkpoint and args.sizes):
            raise SystemExit("jcausal ace file: needs --data, --checkpoint and --sizes")
        X = _load_matrix(Path(args.data))
        sizes = tuple(args.sizes)
        if X.shape[1] != sizes[0]:
            raise SystemExit(f"jcausal: data has {X.shape[1]} features but --sizes starts with {sizes[0]}")
        ckpt = Path(args.checkpoint)
        feature_names = [f"x{i}" for i in range(sizes[0])]
        output_names = [f"y{j}" for j in range(sizes[-1])]
    model = MLP(sizes, activation=args.activation, rngs=nnx.Rngs(0))
    try:
        load(ckpt, model)
    except (FileNotFoundError, CheckpointMismatchError) as err:
        raise SystemExit(f"jcausal: {err}") from None
    apply, params = functional(model)
    steps.update()

    def probs(p, x):
        return jax.nn.softmax(apply(p, x))

    if args.method is None:
        args.method = "monte_carlo" if args.dataset == "iris" else "directional"
    steps.set_postfix_str(f"Phase I ({args.method})")
    kw = {"method": args.method, "batch_size": args.batch_size}
    if args.rank is not None:
        kw["rank"] = args.rank
    if args.method == "monte_carlo":
        kw["data"] = X
    if args.method == "hutchinson":
        kw["key"] = jax.random.key(args.seed)
    if args.method == "gauss_newton":
        probs, kw["head"] = apply, jax.nn.softmax
    features = args.features if args.features else None
    res = explain(probs, X, params=params, features=features, num_alphas=args.num_alphas,
                  max_order=args.max_order, **kw)
    steps.update(2)
    steps.set_postfix_str("writing results")
    name = f"ace_{args.dataset}"
    out.mkdir(parents=True, exist_ok=True)
    save_result(out / f"{name}.npz", res)
    feats = np.asarray(res.features)
    fnames = [feature_names[i] for i in feats]
    fig = plot_causal_regressors(res, feature_names=fnames, output_names=output_names)
    fig.savefig(out / f"{name}.png.tmp.png", dpi=120)
    (out / f"{name}.png.tmp.png").replace(out / f"{name}.png")
    meta = {"dataset": args.dataset, "checkpoint": str(ckpt), "sizes": list(sizes),
            "activation": args.activation, "method": args.method, "rank": args.rank,
            "num_alphas": args.num_alphas, "max_order": args.max_order, "seed": args.seed,
            "features": feats.tolist(), "feature_names": fnames, "output_names": output_names}
    atomic_write_bytes(out / f"{name}.json", json.dumps(meta, indent=2).encode())
    steps.update()
    steps.close()
    _print_table(res, fnames, output_names)
    print(f"wrote {out / (name + '.npz')}, {out / (name + '.png')} and {out / (name + '.json')}")
    return 0


def _print_table(res, feature_names, output_names) -> None:
    import numpy as np

    lo = np.asarray(res.regressor.low)[:, 0]
    hi = np.asarray(res.regressor.high)[:, 0]
    grid = np.stack([lo, 0.5 * (lo + hi), hi], axis=1)
    ace = np.asarray(res.ace(grid))  # (F, 3, m)
    orders = np.asarray(res.orders)
    width = max(len(n) for n in feature_names) + 2
    print("\nAverage causal effect ACE(a) = E[y | do(x = a)] - baseline at a = low / mid / high\n")
    for j, out_name in enumerate(output_names):
        print(f"{out_name}")
        print(f"  {'feature':{width}s}order      low      mid     high")
        for f, name in enumerate(feature_names):
            a = ace[f, :, j]
            print(f"  {name:{width}s}{orders[f, j]:5d} {a[0]:+8.3f} {a[1]:+8.3f} {a[2]:+8.3f}")
    print()



def register(sub) -> None:
    """Add ``jcausal ace`` to the top-level subparsers."""
    from jcausal.ace import METHODS

    ac = sub.add_parser(
        "ace", help="average causal effects of every input on every output (ACE paper)",
        description="Phase I interventional expectations, Phase II Bayesian causal regressors, ACE "
                    "table, figure (.png) and result (.npz) for the Iris MLP or your own MLP "
                    "checkpoint. Outputs are softmax probabilities.")
    ac.add_argument("dataset", choices=["iris", "file"],
                    help="'iris': the reference Iris MLP (trained and saved in --out when no "
                         "--checkpoint); 'file': your MLP (--checkpoint, --sizes) on your data (--data)")
    ac.add_argument("--data", help="'file': rows of training inputs (.npy, .csv, or whitespace text)")
    ac.add_argument("--checkpoint", help="MLP parameters saved with jcausal.models.save")
    ac.add_argument("--sizes", type=int, nargs="+", help="MLP widths incl. input and output "
                                                          "(iris default: 4 8 3)")
    ac.add_argument("--activation", default="relu", help="MLP hidden activation (default: relu)")
    ac.add_argument("--method", choices=METHODS, default=None,
                    help="Phase I estimator. Default: 'monte_carlo' for iris (eqn 2 over the 120 "
                         "training rows is exact and cheap), 'directional' for file (the paper's "
                         "second-order expansion, exact Hessian-vector algebra; cost independent "
                         "of the number of rows)")
    ac.add_argument("--rank", type=_rank, help="covariance directions kept: int, or variance "
                                               "fraction like 0.95 (factor methods)")
    ac.add_argument("--num-alphas", type=int, default=20, help="interventions per feature "
                                                                "(default: %(default)s)")
    ac.add_argument("--max-order", type=int, default=5, help="highest causal-regressor order "
                                                              "(default: %(default)s)")
    ac.add_argument("--features", type=int, nargs="+", help="feature indices (default: all)")
    ac.add_argument("--batch-size", type=int, default=32, help="points per device at once")
    ac.add_argument("--out", default="jcausal-out", help="output folder (default: %(default)s)")
    ac.add_argument("--seed", type=int, default=0, help="training/split/probe seed")
    ac.add_argument("--quiet", action="store_true", help="no progress bar")
    ac.set_defaults(func=_ace)
