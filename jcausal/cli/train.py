"""``jcausal train``: train a reference model."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["register"]


def _fit_iris_mlp(out: Path, hidden, activation: str, epochs: int, lr: float, seed: int,
                  progress: bool) -> dict:
    """Train the reference Iris MLP, save ``iris_mlp.msgpack`` and ``iris_mlp.json`` in ``out``,
    and return the metadata (held-out accuracy on 30 samples included)."""
    import jax
    from flax import nnx

    from jcausal._src.io import atomic_write_bytes
    from jcausal.data import load_iris, train_test_split
    from jcausal.models import MLP, accuracy, functional, save, train

    data = load_iris()
    tr, te = train_test_split(len(data.y), test_size=30, seed=seed)
    sizes = [4, *hidden, 3]
    model = MLP(sizes, activation=activation, rngs=nnx.Rngs(seed))
    result = train(model, data.X[tr], data.y[tr], key=jax.random.key(seed), epochs=epochs,
                   batch_size=16, learning_rate=lr, X_val=data.X[te], y_val=data.y[te],
                   progress=progress)
    apply, params = functional(model)
    meta = {"model": "MLP", "sizes": sizes, "activation": activation, "seed": seed, "epochs": epochs,
            "test_accuracy": accuracy(apply, params, data.X[te], data.y[te]),
            "final_loss": result.history["loss"][-1]}
    save(out / "iris_mlp.msgpack", model)
    atomic_write_bytes(out / "iris_mlp.json", json.dumps(meta, indent=2).encode())
    return meta


def _train_iris(args) -> int:
    out = Path(args.out)
    meta = _fit_iris_mlp(out, args.hidden, args.activation, args.epochs, args.lr, args.seed,
                         progress=not args.quiet)
    print(f"Iris MLP {meta['sizes']}: held-out accuracy {meta['test_accuracy']:.3f} on 30 samples "
          f"(final training loss {meta['final_loss']:.4f})")
    print(f"wrote {out / 'iris_mlp.msgpack'} and {out / 'iris_mlp.json'}")
    return 0



def register(sub) -> None:
    """Add ``jcausal train`` to the top-level subparsers."""
    tr = sub.add_parser("train", help="train a reference model")
    tsub = tr.add_subparsers(dest="task", metavar="TASK", required=True)
    ti = tsub.add_parser("iris", help="the ACE paper's Iris MLP (features min-max scaled)")
    ti.add_argument("--out", default="jcausal-out", help="output folder (default: %(default)s)")
    ti.add_argument("--hidden", type=int, nargs="+", default=[8], help="hidden widths")
    ti.add_argument("--activation", default="relu", help="hidden activation (default: relu)")
    ti.add_argument("--epochs", type=int, default=300)
    ti.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    ti.add_argument("--seed", type=int, default=0)
    ti.add_argument("--quiet", action="store_true", help="no progress bar")
    ti.set_defaults(func=_train_iris)
