"""``jcausal train``: train a reference model."""

from __future__ import annotations

import sys
from pathlib import Path

from jcausal.cli.core import CLIError, command

__all__ = ["register"]

IRIS_SET = "iris_mlp"  # the file set iris_mlp.msgpack + iris_mlp.json in an output folder


# jcausal.models.ACTIVATIONS' names, written out so that the checks import no jax (tests/test_cli.py
# keeps the two equal).
ACTIVATIONS = ("elu", "gelu", "identity", "relu", "sigmoid", "silu", "softplus", "tanh")


def check_mlp_request(activation: str, hidden) -> None:
    """Refuse an unknown activation or non-positive hidden widths before any work."""
    if activation not in ACTIVATIONS:
        raise CLIError(f"unknown --activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    if any(h < 1 for h in hidden):
        raise CLIError(f"hidden widths must be positive, got {list(hidden)}")


def fit_iris_mlp(folder, hidden, activation: str, epochs: int, lr: float, seed: int,
                 progress: bool) -> dict:
    """Train the reference Iris MLP and publish ``iris_mlp.msgpack`` + ``iris_mlp.json`` together in
    a locked output folder (:func:`jcausal._src.io.output_lock`); return the metadata (held-out
    accuracy on 30 samples included).

    The checkpoint records ``model``, ``sizes``, ``activation``, ``seed``, ``dataset``, ``epochs``
    and ``lr`` (:func:`jcausal.models.checkpoint.read_metadata`); the JSON repeats them with the
    accuracy and the checkpoint's SHA-256.
    """
    import jax
    from flax import nnx

    from jcausal._src.io import atomic_write_json, file_manifest
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
    record = {"dataset": "iris", "seed": seed, "epochs": epochs, "lr": lr}
    meta = {"model": "MLP", "sizes": sizes, "activation": activation, **record,
            "test_accuracy": accuracy(apply, params, data.X[te], data.y[te]),
            "final_loss": result.history["loss"][-1]}
    with folder.stage(IRIS_SET, [f"{IRIS_SET}.msgpack", f"{IRIS_SET}.json"]) as stage:
        save(stage / f"{IRIS_SET}.msgpack", model, metadata=record)
        meta["files"] = file_manifest(stage, [f"{IRIS_SET}.msgpack"])
        atomic_write_json(stage / f"{IRIS_SET}.json", meta)
    return meta


def _check_train_iris(args) -> None:
    check_mlp_request(args.activation, args.hidden)
    if args.epochs < 1:
        raise CLIError(f"--epochs must be >= 1, got {args.epochs}")
    if not args.lr > 0:
        raise CLIError(f"--lr must be positive, got {args.lr}")


def _train_iris(args, folder, _) -> int:
    out = Path(args.out)
    meta = fit_iris_mlp(folder, args.hidden, args.activation, args.epochs, args.lr, args.seed,
                        progress=not args.quiet)
    print(f"Iris MLP {meta['sizes']}: held-out accuracy {meta['test_accuracy']:.3f} on 30 samples "
          f"(final training loss {meta['final_loss']:.4f})")
    print(f"wrote {out / 'iris_mlp.msgpack'} and {out / 'iris_mlp.json'}")
    if (out / "ace_iris.json").is_file():
        print(f"jcausal: note: {out / 'ace_iris.json'} and its files were computed with the previous "
              "checkpoint (its SHA-256 is recorded there); run `jcausal ace iris` again to update them",
              file=sys.stderr)
    return 0


def register(sub) -> None:
    """Add ``jcausal train`` to the top-level subparsers."""
    tr = sub.add_parser("train", help="train a reference model")
    tsub = tr.add_subparsers(dest="task", metavar="TASK", required=True)
    ti = command(tsub, "iris", help="the ACE paper's Iris MLP (features min-max scaled)",
                 description="Train the reference Iris MLP; writes iris_mlp.msgpack and iris_mlp.json "
                             "(published together).",
                 run=_train_iris, check=_check_train_iris, out="jcausal-out")
    ti.add_argument("--hidden", type=int, nargs="+", default=[8], help="hidden widths")
    ti.add_argument("--activation", default="relu", help="hidden activation (default: relu)")
    ti.add_argument("--epochs", type=int, default=300)
    ti.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
