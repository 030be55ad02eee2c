"""``jcausal ace run`` (any model, resumable batch job) and ``jcausal ace latent-vae`` (ACE of a
conditional beta-VAE's latents, ACE paper section 5.4): the checks (before any work) and the runs
(under the lock of ``--out``) that :mod:`jcausal.cli.ace` hands to the CLI core."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jcausal.cli.ace_methods import (
    averages_rows,
    check_memory,
    check_rank_method,
    chosen_method,
    method_kinds,
)
from jcausal.cli.core import CLIError, positive_int

__all__ = ["add_options", "check_latent", "check_run", "latent", "locks", "run"]

PROBE_ROWS = 64  # rows the model is evaluated on before any work (NaN/inf, output shape)


def add_options(ac) -> None:
    """Options of ``run`` and ``latent-vae`` on the ``jcausal ace`` parser."""
    g = ac.add_argument_group("'run': a resumable batch job on your own model")
    g.add_argument("--model", help="'package.module:function' returning (model, params): model(params, x) "
                                   "on ONE input, or a jcausal.models.Split for the fast eqn 2; with "
                                   "--checkpoint, 'package.module:Class' of the Flax NNX model saved there "
                                   "(its outputs pass through softmax: class probabilities, as in 'file'). "
                                   "Modules are imported from the installed packages first, then from the "
                                   "folder the command runs in (a file there never shadows an installed "
                                   "package)")
    g.add_argument("--chunk-features", type=positive_int, default=8,
                   help="features per saved chunk (default: %(default)s)")
    g.add_argument("--num-rows", type=int, help="eqn 2 over a subsample of this many rows (>= 2), drawn "
                                                "with --seed")
    g.add_argument("--setting", action="append", metavar="NAME=VALUE",
                   help="a setting of the --method's estimator by its name (repeatable; e.g. --setting "
                        "num_samples=64 with --method hutchinson): every number, flag or word setting of "
                        "the estimator's class, a registered estimator of your own included")
    g.add_argument("--low", type=float, nargs="+", help="intervention range low end: one value, or one "
                                                       "per feature (default: each column's minimum)")
    g.add_argument("--high", type=float, nargs="+", help="intervention range high end (default: each "
                                                        "column's maximum)")
    g.add_argument("--overwrite", action="store_true", help="replace another job's files in --out")
    g.add_argument("--distributed", action="store_true",
                   help="several hosts via jax.distributed.initialize (coordinator, process count and id "
                        "from --coordinator/--num-processes/--process-id or JAX's environment variables)")
    g.add_argument("--coordinator", help="coordinator address host:port (with --distributed)")
    g.add_argument("--num-processes", type=int, help="number of processes (with --distributed)")
    g.add_argument("--process-id", type=int, help="this process's id (with --distributed)")
    h = ac.add_argument_group("'latent-vae': ACE of generative latents (ACE paper 5.4)")
    h.add_argument("--epochs", type=int, default=15, help="cVAE training epochs (default: 15)")
    h.add_argument("--beta", type=float, default=10.0, help="KL weight of the beta-VAE (default: 10)")
    h.add_argument("--samples", type=int, default=800, help="prior samples per expectation (default: 800)")


def locks(args) -> bool:
    """Whether this process locks ``--out``: all but the workers of a distributed job."""
    if getattr(args, "dataset", None) == "run" and args.distributed:
        import jax

        return jax.process_index() == 0
    return True


def _import_path() -> None:
    """A user's module next to where the command runs is importable, AFTER the installed packages:
    a file there named like a dependency (``optax.py``) never replaces it."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _bounds(values, k: int, flag: str):
    import numpy as np

    if values is None:
        return None
    if len(values) not in (1, k):
        raise CLIError(f"{flag} takes one value or one per feature ({k}), got {len(values)}")
    v = np.asarray(values if len(values) == k else values * k, np.float64)
    if not np.all(np.isfinite(v)):
        raise CLIError(f"{flag} values must be finite, got {values}")
    return v


def check_run(args) -> dict:
    """Every refusal of ``ace run`` before the lock and any work: options, model, data, memory."""
    _check_run_options(args)  # the command line alone, before jax is imported
    from jcausal.ace.jobs import load_rows

    if args.distributed:
        _init_distributed(args)
    _import_path()
    try:
        X = load_rows(args.data)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from None
    feats, low, high = _check_rows(args, X)
    model, Xd, m = _probe(args, X)
    _check_method_options(args)  # the --model module is imported: its own estimators are registered
    check_memory(args, len(feats), m, rows=X.shape[0])
    return {"model": model, "X": Xd, "features": args.features, "low": low, "high": high,
            "outputs": model.output, "method": _estimator(args)}


_OWN_FLAGS = {"rank": "--rank", "num_rows": "--num-rows", "key": "--seed", "data": "--data"}


def _setting_value(name: str, text: str, default):
    """``text`` as the type of the setting's default (a number, a flag or a word)."""
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise CLIError(f"--setting {name}={text}: {name} is a flag (true or false)")
    for kind in ((int,) if isinstance(default, int) else (float,) if isinstance(default, float)
                 else (str,) if isinstance(default, str) else (int, float, str)):
        try:
            return kind(text)
        except ValueError:
            continue
    raise CLIError(f"--setting {name}={text}: {name} is a number ({type(default).__name__})")


def _estimator_settings(args, method: str) -> dict:
    """The ``--setting NAME=VALUE`` options as keyword settings of the estimator registered as
    ``method``, each converted to the type of its default; read from the class, so an estimator
    registered by the user's own code takes its settings here with no edit of the CLI."""
    from jcausal.ace import estimators

    fields = estimators.setting_fields(method)
    settable = sorted(n for n, f in fields.items() if n not in _OWN_FLAGS and (
        f.default is None or isinstance(f.default, (bool, int, float, str))))
    out = {}
    for item in args.setting or []:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise CLIError(f"--setting takes NAME=VALUE, got {item!r}")
        if name in _OWN_FLAGS and name in fields:
            raise CLIError(f"--setting {name}: pass it as {_OWN_FLAGS[name]}")
        if name not in settable:
            raise CLIError(f"--setting {name}: --method {method} has no such setting; its settings are "
                           f"{settable or 'none'}")
        if name in out:
            raise CLIError(f"--setting {name} is given twice")
        out[name] = _setting_value(name, text.strip(), fields[name].default)
    return out


def _estimator(args):
    """The estimator of ``--method`` with its settings (``--rank``, ``--num-rows``, ``--seed`` for one
    that draws, and every ``--setting``), built and validated before the lock."""
    import jax

    from jcausal.ace import estimators, make_estimator

    method = chosen_method(args)
    settings = _estimator_settings(args, method)
    key = jax.random.key(args.seed) if estimators.takes_setting(method, "key") else None  # rows or probes
    try:
        return make_estimator(method, key=key, num_rows=args.num_rows, rank=args.rank, **settings)
    except (TypeError, ValueError) as err:
        raise CLIError(f"--method {method}: {err}") from None


def _check_method_options(args) -> None:
    """The options that depend on the ``--method`` (a registered estimator by now)."""
    method = chosen_method(args)
    if method not in method_kinds():
        raise CLIError(f"--method {method}: no estimator is registered under this name; the methods are "
                       f"{', '.join(method_kinds())} (an estimator of your own is registered when the "
                       "--model module is imported)")
    if args.num_rows is not None and not averages_rows(method):
        raise CLIError(f"--num-rows subsamples the rows of eqn 2 (--method definition); --method "
                       f"{method} computes eqn 4 from the moments of all rows")
    check_rank_method(args)
    if method == "finite_difference" and not args.x64:
        raise CLIError("--method finite_difference needs float64 (in float32 its second differences "
                       "are rounding noise): add --x64")


def _check_run_options(args) -> None:
    """The refusals of ``ace run`` that need only the command line."""

    if not args.model or not args.data:
        raise CLIError("jcausal ace run: needs --model module:function and --data (.npy, .npz or IDX folder)")
    if args.num_alphas < 1 or args.max_order < 0 or args.batch_size < 1:
        raise CLIError(f"--num-alphas and --batch-size must be >= 1 and --max-order >= 0, got "
                       f"{args.num_alphas}, {args.batch_size}, {args.max_order}")
    if args.num_alphas < args.max_order + 2:
        raise CLIError(f"--num-alphas {args.num_alphas} is too few for --max-order {args.max_order}: "
                       f"need at least {args.max_order + 2}")
    if args.num_rows is not None and args.num_rows < 2:
        raise CLIError(f"--num-rows must be >= 2 (rows of the subsample eqn 2 averages over), got "
                       f"{args.num_rows}")
    if chosen_method(args) in method_kinds():  # else the --model module may register it: checked then
        _check_method_options(args)
    feats_given = args.features
    if feats_given is not None and (min(feats_given) < 0 or len(set(feats_given)) != len(feats_given)):
        raise CLIError(f"--features must be distinct indices >= 0, got {args.features}")


def _init_distributed(args) -> None:
    import jax

    kw = {}
    if args.coordinator:
        kw["coordinator_address"] = args.coordinator
    if args.num_processes is not None:
        kw["num_processes"] = args.num_processes
    if args.process_id is not None:
        kw["process_id"] = args.process_id
    jax.distributed.initialize(**kw)


def _check_rows(args, X):
    """The data rows against the options: ``(features, low, high)``."""
    import numpy as np

    n, k = X.shape
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CLIError(f"--data {args.data} holds {int(bad.sum())} NaN/inf values (first at row {r}, column "
                       f"{c}, counting from 0)")
    feats = list(range(k)) if args.features is None else list(args.features)
    if max(feats) >= k:
        raise CLIError(f"--features must be in [0, {k}), got {args.features}")
    if isinstance(args.rank, int) and args.rank > k:
        raise CLIError(f"--rank {args.rank} exceeds the number of features ({k})")
    if args.num_rows is not None and args.num_rows > n:
        raise CLIError(f"--num-rows {args.num_rows} exceeds the {n} rows of --data")
    low, high = _bounds(args.low, k, "--low"), _bounds(args.high, k, "--high")
    lo = X.min(0) if low is None else low
    hi = X.max(0) if high is None else high
    bad = [f for f in feats if not lo[f] < hi[f]]
    if bad:
        shown = ", ".join(f"x{f} in [{lo[f]:g}, {hi[f]:g}]" for f in bad[:5])
        raise CLIError(f"nothing to intervene on for feature(s) {shown} (a constant column, or --low not "
                       "below --high): leave them out with --features, or give their range with --low and "
                       "--high")
    return feats, low, high


def _probe(args, X):
    """The user's model through the one contract (``load_model``: ``jcausal.wrap``, float64
    parameters with ``--x64``), checked on the first rows: ``(wrapped model, rows, number of
    outputs)``."""
    import jax
    import numpy as np

    from jcausal.ace.jobs import load_model

    Xd = X.astype(np.float64 if args.x64 else np.float32)
    with jax.enable_x64(True) if args.x64 else _null():
        try:
            model = load_model(args.model, Xd[0], args.checkpoint)
        except (ValueError, FileNotFoundError) as err:
            raise CLIError(str(err)) from None
        try:
            probe = np.asarray(jax.vmap(model.apply, in_axes=(None, 0))(model.params, Xd[:PROBE_ROWS]),
                               np.float64)
        except Exception as err:
            raise CLIError(f"the model does not accept one row of the data (width {X.shape[1]}): "
                           f"{type(err).__name__}: {' '.join(str(err).split())[:300]}") from None
    if probe.ndim != 2:
        raise CLIError(f"the model must return a vector (m,) for one input, got shape {probe.shape[1:]}")
    if not np.all(np.isfinite(probe)):
        raise CLIError("the model returns NaN/inf on the first rows of --data")
    return model, Xd, probe.shape[1]


def _null():
    import contextlib

    return contextlib.nullcontext()


def run(args, folder, prep) -> int:
    import json

    import jax
    import numpy as np

    from jcausal.ace import Execution
    from jcausal.ace.jobs import JobError, run_job

    out = Path(args.out)
    est = prep["method"]
    try:
        with jax.enable_x64(True) if args.x64 else _null():
            res = run_job(prep["model"], prep["X"], out, features=prep["features"],
                          num_alphas=args.num_alphas, max_order=args.max_order, low=prep["low"],
                          high=prep["high"], method=est, run=Execution(batch_size=args.batch_size),
                          chunk_features=args.chunk_features, overwrite=args.overwrite,
                          progress=not args.quiet, distributed=args.distributed,
                          record={"model": args.model, "outputs": prep["outputs"]})
    except (FileExistsError, JobError) as err:
        raise CLIError(str(err).replace("pass overwrite=True (--overwrite)", "pass --overwrite")) from None
    if res is not None:
        meta = json.loads((out / "ace.json").read_text())
        E = np.asarray(res.expectations)
        print(f"Phase I method: {meta['method']}; {len(meta['features'])} features x {meta['num_alphas']} "
              f"alphas; outputs: {prep['outputs']}; E in [{E.min():.4f}, {E.max():.4f}]; chunks computed "
              f"this run: {len(meta['computed_this_run'])} of {meta['num_chunks']}")
        print(f"wrote {out / 'ace.npz'} and {out / 'ace.json'}")
    return 0


def check_latent(args):
    from jcausal.data import load_mnist

    if args.setting:
        raise CLIError("--setting is an option of 'jcausal ace run' (the latents' ACE takes --samples)")
    if args.epochs < 1 or args.samples < 2 or not args.beta >= 0:
        raise CLIError(f"need --epochs >= 1, --samples >= 2, --beta >= 0; got {args.epochs}, {args.samples}, "
                       f"{args.beta}")
    try:
        return load_mnist(args.data, val_fraction=0.2, seed=args.seed, flatten=True)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(f"MNIST not found or unreadable ({err}); pass --data FOLDER with the IDX files") \
            from None


def latent(args, folder, data) -> int:
    import jax
    import numpy as np
    from flax import nnx

    from jcausal.ace.latent import latent_ace, rank_latents, traversals
    from jcausal.cli.core import (
        finish_checkpoint,
        partial_checkpoint,
        publish,
        require_trained,
        reuse_checkpoint,
    )
    from jcausal.models import load, split_functional
    from jcausal.models.cvae import ConditionalVAE, train_cvae
    from jcausal.plot.latent import plot_class_ace, plot_latent_ace_rows, plot_latent_ranking, plot_traversals

    out = Path(args.out)
    model = ConditionalVAE(784, latent=10, num_classes=10, beta=args.beta, rngs=nnx.Rngs(args.seed))
    history = None
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        try:
            load(ckpt, model)
        except Exception as err:
            raise CLIError(f"--checkpoint {ckpt}: {err}") from None
    else:
        ckpt = out / "cvae.msgpack"
        record = {"seed": args.seed, "epochs": args.epochs, "beta": args.beta}
        remedy = "use another --out, or the --seed/--epochs/--beta it was trained with"
        if not reuse_checkpoint(ckpt, model, record, remedy=remedy):
            fit = train_cvae(model, data.x_train, data.y_train, key=jax.random.key(args.seed),
                             epochs=args.epochs, progress=not args.quiet, checkpoint=partial_checkpoint(ckpt))
            history = fit.history
            require_trained(fit.steps, None, what="training the cVAE")
            finish_checkpoint(ckpt, model, record)
    split, params = split_functional(model.decoder)
    alphas = np.linspace(-3, 3, 7)
    res = latent_ace(split, jax.random.key(args.seed + 1), num_latents=10, num_classes=10, params=params,
                     alphas=alphas, num_samples=args.samples)
    X, y = np.asarray(data.x_train), np.asarray(data.y_train)
    cors = [float(np.corrcoef(np.asarray(res.class_ace()[k]), X[y == k].mean(0) - X.mean(0))[0, 1])
            for k in range(10)]
    ranking = rank_latents(res)
    imgs = traversals(split, num_latents=10, num_classes=10, label=3, alphas=alphas, params=params)
    figs = {"latent_class_ace.png": plot_class_ace(res),
            "latent_rows_c3.png": plot_latent_ace_rows(res, 3),
            "latent_traversals_c3.png": plot_traversals(imgs, alphas),
            "latent_ranking.png": plot_latent_ranking(ranking)}
    summary = {"checkpoint": str(ckpt), "beta": args.beta, "epochs": args.epochs, "seed": args.seed,
               "training_loss": history, "samples": args.samples, "alphas": alphas.tolist(),
               "class_map_correlation_with_class_mean_difference": cors, "ranking": ranking,
               "figures": sorted(figs)}
    publish(folder, "latent_ace", figs, summary)
    print("class-code ACE maps vs (class mean - overall mean): correlation "
          f"{min(cors):.3f} .. {max(cors):.3f}")
    for r in ranking:
        note = "  (nothing discernible)" if r["negligible"] else ""
        print(f"  z{r['latent']}: total effect {r['total_effect']:.3f} "
              f"({100 * r['relative']:.1f}% of the largest){note}")
    print(f"wrote {out / 'latent_ace.json'} and {len(figs)} figures")
    return 0
