"""``jcausal ace``: Phase I + Phase II ACE for the Iris MLP or a user's MLP checkpoint.

Order of work: every option and the data are checked first (one ``jcausal: ...`` line and exit
status 2 on a problem); then the output folder is locked (a concurrent run into the same folder is
refused at once); then the checkpoint's recorded settings are compared with the request (never a
ReLU checkpoint evaluated with tanh, nor a seed-0 model reused for ``--seed 5``); then the
computation; then the run's files (``.npz``, ``.png``, ``.json`` naming the others' SHA-256) are
published together (:meth:`jcausal._src.io.OutputFolder.stage`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from jcausal.cli import ace_jobs
from jcausal.cli.ace_methods import (
    averages_rows,
    check_memory,
    check_rank_method,
    chosen_method,
    method_kinds,
    rank_methods,
)
from jcausal.cli.core import CLIError, command
from jcausal.cli.train import IRIS_SET, check_mlp_request, fit_iris_mlp

__all__ = ["register"]



def _rank(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


# ------------------------------------------------------------------------------ checks, no work


def _check_options(args) -> tuple[int, ...]:
    """Everything that can be refused from the command line alone; returns the MLP sizes."""
    if args.dataset == "file" and not (args.data and args.checkpoint and args.sizes):
        raise CLIError("jcausal ace file: needs --data, --checkpoint and --sizes")
    sizes = tuple(args.sizes or (4, 8, 3))
    if len(sizes) < 2 or min(sizes) < 1:
        raise CLIError(f"--sizes needs at least 2 positive widths (input ... output), got {list(sizes)}")
    if args.dataset == "iris" and (sizes[0], sizes[-1]) != (4, 3):
        raise CLIError(f"--sizes for iris must start with 4 (features) and end with 3 (classes), got "
                       f"{list(sizes)}")
    check_mlp_request(args.activation, sizes[1:-1])
    if args.num_alphas < 1 or args.max_order < 0:
        raise CLIError(f"--num-alphas must be >= 1 and --max-order >= 0, got {args.num_alphas} and "
                       f"{args.max_order}")
    if args.num_alphas < args.max_order + 2:
        raise CLIError(f"--num-alphas {args.num_alphas} is too few for --max-order {args.max_order}: "
                       f"need at least {args.max_order + 2} (more alphas or a lower order)")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.method is not None and args.method not in method_kinds():
        raise CLIError(f"--method {args.method}: not a method; the methods are {', '.join(method_kinds())}")
    if args.setting:
        raise CLIError(f"--setting is an option of 'jcausal ace run'; 'ace {args.dataset}' takes --method "
                       "and --rank")
    if args.rank is not None:
        if isinstance(args.rank, int) and args.rank < 1:
            raise CLIError(f"--rank must be a positive number of directions or a fraction in (0, 1], "
                           f"got {args.rank}")
        if isinstance(args.rank, float) and not 0.0 < args.rank <= 1.0:
            raise CLIError(f"a fractional --rank must be in (0, 1], got {args.rank}")
    if args.features is not None:
        neg = [f for f in args.features if f < 0]
        if neg:
            raise CLIError(f"--features must be indices >= 0, got {neg}")
        if len(set(args.features)) != len(args.features):
            raise CLIError(f"--features has duplicates: {args.features}")
    if args.method == "finite_difference" and not getattr(args, "x64", False):
        raise CLIError("--method finite_difference needs float64 (in float32 its second differences "
                       "are rounding noise): add --x64")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise CLIError(f"checkpoint not found: {args.checkpoint}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a folder")
    return sizes


def _load_matrix(path: Path):
    """Rows of inputs from ``.npy``, ``.csv`` or whitespace text, as float64, checked."""
    import warnings

    import numpy as np

    if not path.exists():
        raise CLIError(f"data file not found: {path}")
    if not path.is_file():
        raise CLIError(f"--data {path} is not a file")
    if path.suffix == ".npy":
        try:
            X = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise CLIError(f"{path} is not a .npy array of numbers (empty, corrupt, or Python "
                           "objects)") from None
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data": checked below
                X = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2,
                               dtype=np.float64)
        except ValueError as err:
            msg = " ".join(str(err).split())
            hint = "; a header row? remove it" if "row 0" in msg else ""
            raise CLIError(f"cannot read {path} as rows of numbers ({msg}){hint}") from None
    if X.size == 0:
        raise CLIError(f"data file {path} holds no rows")
    if X.ndim != 2:
        raise CLIError(f"{path} must hold a 2-d array (rows, features), got shape {X.shape}")
    if X.dtype == bool or not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise CLIError(f"{path} must hold real numbers, got dtype {X.dtype}")
    X = X.astype(np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CLIError(f"{path} contains {int(bad.sum())} NaN/inf values (first at row {r}, column {c}, "
                       "counting from 0)")
    if X.shape[0] < 2:
        raise CLIError(f"{path} has {X.shape[0]} row; ACE needs at least 2")
    return X


def _check_features(k: int, args) -> list[int]:
    """Feature indices and ``--rank`` against the input width ``k``; the features to explain."""
    feats = list(range(k)) if args.features is None else list(args.features)
    out = [f for f in feats if f >= k]
    if out:
        raise CLIError(f"--features {out} out of range: the data has {k} features (0..{k - 1})")
    if isinstance(args.rank, int) and args.rank > k:
        raise CLIError(f"--rank {args.rank} exceeds the number of features ({k})")
    return feats


def _check_constant(X, feats, feature_names) -> None:
    """No constant column among the features (nothing to intervene on)."""
    import numpy as np

    const = [f for f in feats if np.ptp(X[:, f]) == 0]
    if const:
        shown = ", ".join(f"{feature_names[f]} (index {f}) = {X[0, f]:g}" for f in const[:5])
        raise CLIError(f"constant feature(s) in the data, nothing to intervene on: {shown}; leave them "
                       "out with --features")


def _check_checkpoint(ckpt: Path, wanted: dict, *, own: bool, remedy: str) -> dict:
    """Compare a checkpoint's recorded settings with the request; refuse with the differences.

    ``own``: the checkpoint this command trains and reuses in ``--out``: every setting must be
    recorded and equal. Otherwise (``--checkpoint``) the settings it records must agree."""
    from jcausal.models.checkpoint import metadata_differences, read_metadata

    meta = read_metadata(ckpt)
    side = ckpt.with_suffix(".json")
    if not meta and own and side.is_file():  # written before checkpoints carried their record
        with contextlib.suppress(ValueError, OSError):
            meta = {k: v for k, v in json.loads(side.read_text()).items()
                    if k in ("model", "sizes", "activation", "seed")} | {"dataset": "iris"}
    if own:
        diffs = metadata_differences(meta, wanted)
    else:
        diffs = metadata_differences(meta, {k: v for k, v in wanted.items() if k in meta})
        unknown = [k for k in ("sizes", "activation") if k not in meta]
        if unknown:
            print(f"jcausal: note: {ckpt} records no {' or '.join(unknown)}; using "
                  + ", ".join(f"--{k} {wanted[k]}" for k in unknown), file=sys.stderr)
    if diffs:
        raise CLIError(f"{ckpt} was trained with other settings ({'; '.join(diffs)}): {remedy}")
    return meta


# ------------------------------------------------------------------------------------ the command


def _check(args):
    """Everything that can be refused before the lock and any work; what the run needs."""
    if args.dataset == "run":
        return ace_jobs.check_run(args)
    if args.dataset == "latent-vae":
        return ace_jobs.check_latent(args)
    sizes = _check_options(args)
    prep = {"sizes": sizes}
    if args.dataset == "file":  # a user's file is checked before anything else
        X = _load_matrix(Path(args.data))
        prep.update(X=X, feature_names=[f"x{i}" for i in range(X.shape[1])],
                    output_names=[f"y{j}" for j in range(sizes[-1])])
        if X.shape[1] != sizes[0]:
            raise CLIError(f"the data has {X.shape[1]} features but --sizes starts with {sizes[0]}")
    feats = prep["feats"] = _check_features(sizes[0], args)
    check_rank_method(args)
    check_memory(args, len(feats), sizes[-1])
    if args.dataset == "file":
        _check_constant(prep["X"], feats, prep["feature_names"])
    wanted = {"model": "MLP", "sizes": list(sizes), "activation": args.activation}
    if args.dataset == "iris":
        wanted |= {"seed": args.seed, "dataset": "iris"}
    prep["wanted"] = wanted
    if args.checkpoint:
        prep["ck_meta"] = _check_checkpoint(
            Path(args.checkpoint), wanted, own=False,
            remedy="pass the settings it was trained with, or another checkpoint")
    return prep


def _run(args, folder, prep) -> int:
    if args.dataset in ("run", "latent-vae"):
        job = ace_jobs.run if args.dataset == "run" else ace_jobs.latent
        return job(args, folder, prep)
    import jax
    import numpy as np

    sizes, feats, wanted = prep["sizes"], prep["feats"], prep["wanted"]
    out = Path(args.out)
    if args.dataset == "iris":  # loaded under the lock: a refused run does nothing
        from jcausal.data import load_iris, train_test_split

        data = load_iris()
        tr, _ = train_test_split(len(data.y), test_size=30, seed=args.seed)
        X = np.asarray(data.X[tr], np.float64)
        feature_names, output_names = list(data.feature_names), list(data.target_names)
        _check_constant(X, feats, feature_names)
    else:
        X, feature_names, output_names = prep["X"], prep["feature_names"], prep["output_names"]
    if args.checkpoint:
        ckpt, ck_meta = Path(args.checkpoint), prep["ck_meta"]
    else:
        ckpt = out / f"{IRIS_SET}.msgpack"
        hidden = " ".join(str(s) for s in sizes[1:-1])
        if ckpt.is_file():
            ck_meta = _check_checkpoint(
                ckpt, wanted, own=True,
                remedy=f"use another --out, or retrain it with `jcausal train iris --out {out} "
                       f"--hidden {hidden} --activation {args.activation} --seed {args.seed}`")
        else:
            if not args.quiet:
                print("jcausal: training the Iris MLP", file=sys.stderr)
            fit_iris_mlp(folder, sizes[1:-1], args.activation, epochs=300, lr=1e-2,
                         seed=args.seed, progress=False)
            ck_meta = _check_checkpoint(ckpt, wanted, own=True, remedy="")
    from flax import nnx

    from jcausal.experiments.ace_mlp import effect_report, effect_table, mlp_ace
    from jcausal.models import MLP, load

    method = chosen_method(args)  # eqn 2 over the rows given: the quantity asked for
    with jax.enable_x64(True) if args.x64 else contextlib.nullcontext():
        model = MLP(sizes, activation=args.activation, rngs=nnx.Rngs(0))
        load(ckpt, model)
        Xd = np.asarray(X, np.float64 if args.x64 else np.float32)  # the parameters take its dtype
        res, fig = mlp_ace(model, Xd, feats, method=method, num_alphas=args.num_alphas,
                           max_order=args.max_order, rank=args.rank, seed=args.seed,
                           batch_size=args.batch_size, names=(feature_names, output_names),
                           progress=not args.quiet)
        report = effect_report(res, [feature_names[f] for f in feats], output_names)
        name = f"ace_{args.dataset}"
        _write(folder, name, args, res, fig, report, sizes, ckpt, ck_meta, feats, feature_names,
               output_names, method)
        table = effect_table(res, report)
    eqn = "eqn 2, the definition: the mean over the data rows" if averages_rows(method) else \
        "eqn 4, the paper's second-order expansion"
    print(f"Phase I method: {method} ({eqn}; {len(X)} rows); outputs: softmax probabilities")
    print(table)
    for w in report["warnings"]:
        print(f"warning: {w}")
    print(f"wrote {out / (name + '.npz')}, {out / (name + '.png')} and {out / (name + '.json')}")
    return 0


def _write(folder, name, args, res, fig, report, sizes, ckpt, ck_meta, feats, feature_names,
           output_names, method) -> None:
    """Publish ``name.npz``, ``name.png`` and ``name.json`` (last, naming the others' SHA-256)."""
    import matplotlib.pyplot as plt

    from jcausal._src.io import atomic_savefig, atomic_write_json, file_manifest, file_sha256
    from jcausal.ace import save_result

    files = [f"{name}.npz", f"{name}.png"]
    meta = {"dataset": args.dataset,
            "checkpoint": {"path": str(ckpt), "sha256": file_sha256(ckpt), "metadata": ck_meta},
            "sizes": list(sizes), "activation": args.activation, "method": method,
            "outputs": "probabilities",
            "equation": 2 if averages_rows(method) else 4,
            "x64": bool(args.x64), "rank": args.rank, "num_alphas": args.num_alphas,
            "max_order": args.max_order, "seed": args.seed, "features": list(feats),
            "feature_names": [feature_names[f] for f in feats], "output_names": output_names,
            "expectations_range": report["range"],
            "expectations_outside_unit_interval": bool(report["outside"]),
            "flags": {"outside_unit_interval": report["outside"],
                      "order0_with_spread": report["flat_but_spread"]},
            "warnings": report["warnings"]}
    try:
        with folder.stage(name, [*files, f"{name}.json"]) as stage:
            save_result(stage / files[0], res)
            atomic_savefig(fig, stage / files[1], dpi=120)
            meta["files"] = file_manifest(stage, files)
            atomic_write_json(stage / f"{name}.json", meta)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------- the table


def register(sub) -> None:
    """Add ``jcausal ace`` to the top-level subparsers."""

    ac = command(
        sub, "ace", help="average causal effects of every input on every output (ACE paper)",
        description="Phase I interventional expectations, Phase II Bayesian causal regressors, ACE "
                    "table, figure (.png) and result (.npz) for the Iris MLP or your own MLP "
                    "checkpoint ('iris', 'file': outputs are softmax probabilities), or any model as a "
                    "resumable job ('run': the outputs the model returns; ace.json records whether they "
                    "are probabilities).",
        run=_run, check=_check, locks=ace_jobs.locks, out="jcausal-out")
    ac.add_argument("dataset", choices=["iris", "file", "run", "latent-vae"],
                    help="'iris': the reference Iris MLP (trained and saved in --out when no "
                         "--checkpoint); 'file': your MLP (--checkpoint, --sizes) on your data (--data); "
                         "'run': any model (--model module:function) as a resumable batch job; "
                         "'latent-vae': ACE of a conditional beta-VAE's latents on MNIST pixels")
    ac.add_argument("--data", help="'file': rows of training inputs (.npy, .csv, or whitespace text; "
                                   "numbers only, no header row); 'run': .npy, .npz or an IDX folder")
    ac.add_argument("--checkpoint", help="MLP parameters saved with jcausal.models.save")
    ac.add_argument("--sizes", type=int, nargs="+", help="MLP widths incl. input and output "
                                                          "(iris default: 4 8 3)")
    ac.add_argument("--activation", default="relu", help="MLP hidden activation (default: relu)")
    ac.add_argument("--method", default=None, metavar="METHOD",
                    help=f"Phase I estimator: {', '.join(method_kinds())}, or (with 'run') an "
                         "estimator registered by the --model module. Default: 'definition' (eqn 2, the "
                         "mean of the model over the data rows with x_i = a; the MLP's first layer runs "
                         "once per row). The eqn-4 methods ('directional', 'exact', ...) compute the "
                         "paper's second-order expansion, which can be far off on trained networks; they "
                         "are checked against eqn 2 on a subsample. 'finite_difference' needs --x64")
    ac.add_argument("--x64", action="store_true",
                    help="compute in float64 (jax_enable_x64 for this run; needed by "
                         "finite_difference)")
    ac.add_argument("--rank", type=_rank, help="covariance directions kept by the eqn-4 factor methods "
                                               f"({', '.join(rank_methods())}): int, or variance "
                                               "fraction like 0.95")
    ac.add_argument("--num-alphas", type=int, default=20, help="interventions per feature "
                                                                "(default: %(default)s)")
    ac.add_argument("--max-order", type=int, default=5, help="highest causal-regressor order "
                                                              "(default: %(default)s; needs "
                                                              "--num-alphas >= max-order + 2)")
    ac.add_argument("--features", type=int, nargs="+", help="feature indices (default: all)")
    ac.add_argument("--batch-size", type=int, default=32, help="points per device at once")
    ace_jobs.add_options(ac)
