"""``jcausal ace run`` (any model, resumable batch job) and ``jcausal ace latent-vae`` (ACE of a
conditional beta-VAE's latents, ACE paper section 5.4)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from jcausal.cli import CLIError

__all__ = ["add_options", "latent", "run"]


def add_options(ac) -> None:
    """Options of ``run`` and ``latent-vae`` on the ``jcausal ace`` parser."""
    g = ac.add_argument_group("'run': a resumable batch job on your own model")
    g.add_argument("--model", help="'package.module:function' returning (model, params): model(params, x) "
                                   "on ONE input, or a jcausal.models.Split for the fast eqn 2; with "
                                   "--checkpoint, 'package.module:Class' of the Flax NNX model saved there")
    g.add_argument("--chunk-features", type=int, default=8, help="features per saved chunk (default: 8)")
    g.add_argument("--num-rows", type=int, help="eqn 2 over a seeded subsample of this many rows")
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


def run(args) -> int:
    import jax
    import numpy as np

    from jcausal._src.io import output_lock
    from jcausal.ace.jobs import JobError, load_model, load_rows, run_job

    if not args.model or not args.data:
        raise CLIError("jcausal ace run: needs --model module:function and --data (.npy, .npz or IDX folder)")
    if args.chunk_features < 1:
        raise CLIError(f"--chunk-features must be >= 1, got {args.chunk_features}")
    if args.num_alphas < args.max_order + 2:
        raise CLIError(f"--num-alphas {args.num_alphas} is too few for --max-order {args.max_order}: "
                       f"need at least {args.max_order + 2}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a folder")
    if args.distributed:
        kw = {}
        if args.coordinator:
            kw["coordinator_address"] = args.coordinator
        if args.num_processes is not None:
            kw["num_processes"] = args.num_processes
        if args.process_id is not None:
            kw["process_id"] = args.process_id
        jax.distributed.initialize(**kw)
    sys.path.insert(0, os.getcwd())  # a user's module next to where the command runs
    try:
        model, params = load_model(args.model, args.checkpoint)
        X = load_rows(args.data)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from None
    k = X.shape[1]
    try:
        probe = jax.eval_shape(lambda p, x: _call(model, p, x), params, X[0])
    except Exception as err:
        raise CLIError(f"the model does not accept one row of the data (width {k}): "
                       f"{type(err).__name__}: {err}") from None
    if len(probe.shape) > 1:
        raise CLIError(f"the model must return a vector (m,) for one input, got shape {probe.shape}")
    feats = args.features
    if feats is not None and (min(feats) < 0 or max(feats) >= k):
        raise CLIError(f"--features must be in [0, {k}), got {feats}")
    phase1 = {"batch_size": args.batch_size}
    if args.method:
        phase1["method"] = args.method
    if args.num_rows:
        phase1["num_rows"] = args.num_rows
    lock = output_lock(out) if not args.distributed or jax.process_index() == 0 else contextlib.nullcontext()
    try:
        with lock:
            res = run_job(model, X, out, params=params, features=feats, num_alphas=args.num_alphas,
                          max_order=args.max_order, chunk_features=args.chunk_features,
                          overwrite=args.overwrite, progress=not args.quiet, distributed=args.distributed,
                          model_name=args.model, **phase1)
    except FileExistsError as err:
        raise CLIError(str(err)) from None
    except JobError as err:
        raise CLIError(str(err)) from None
    if res is not None:
        meta = json.loads((out / "ace.json").read_text())
        E = np.asarray(res.expectations)
        print(f"Phase I method: {meta['method']}; {len(meta['features'])} features x {meta['num_alphas']} "
              f"alphas; E in [{E.min():.4f}, {E.max():.4f}]; chunks computed this run: "
              f"{len(meta['computed_this_run'])} of {meta['num_chunks']}")
        print(f"wrote {out / 'ace.npz'} and {out / 'ace.json'}")
    return 0


def _call(model, params, x):
    from jcausal._src.calling import Model

    return Model(model, params is not None)(params, x)


def latent(args) -> int:
    import jax
    import numpy as np
    from flax import nnx

    from jcausal._src.io import atomic_savefig, atomic_write_json, output_lock
    from jcausal.ace.latent import latent_ace, rank_latents, traversals
    from jcausal.data import load_mnist
    from jcausal.models import load, save, split_functional
    from jcausal.models.cvae import ConditionalVAE, train_cvae
    from jcausal.plot.latent import plot_class_ace, plot_latent_ace_rows, plot_latent_ranking, plot_traversals

    if args.epochs < 1 or args.samples < 2 or not args.beta >= 0:
        raise CLIError(f"need --epochs >= 1, --samples >= 2, --beta >= 0; got {args.epochs}, {args.samples}, "
                       f"{args.beta}")
    try:
        data = load_mnist(args.data, val_fraction=0.2, seed=args.seed, flatten=True)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(f"MNIST not found or unreadable ({err}); pass --data FOLDER with the IDX files") \
            from None
    out = Path(args.out)
    with output_lock(out):
        model = ConditionalVAE(784, latent=10, num_classes=10, beta=args.beta, rngs=nnx.Rngs(args.seed))
        ckpt = Path(args.checkpoint) if args.checkpoint else out / "cvae.msgpack"
        if ckpt.is_file():
            load(ckpt, model)
            history = None
        else:
            history = train_cvae(model, data.x_train, data.y_train, key=jax.random.key(args.seed),
                                 epochs=args.epochs, progress=not args.quiet, checkpoint=ckpt).history
            save(ckpt, model)
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
        for name, fig in figs.items():
            atomic_savefig(fig, out / name, dpi=110, bbox_inches="tight")
        summary = {"checkpoint": str(ckpt), "beta": args.beta, "epochs": args.epochs,
                   "training_loss": history, "samples": args.samples, "alphas": alphas.tolist(),
                   "class_map_correlation_with_class_mean_difference": cors, "ranking": ranking,
                   "figures": sorted(figs)}
        atomic_write_json(out / "latent_ace.json", summary)
    print("class-code ACE maps vs (class mean - overall mean): correlation "
          f"{min(cors):.3f} .. {max(cors):.3f}")
    for r in ranking:
        note = "  (nothing discernible)" if r["negligible"] else ""
        print(f"  z{r['latent']}: total effect {r['total_effect']:.3f} "
              f"({100 * r['relative']:.1f}% of the largest){note}")
    print(f"wrote {out / 'latent_ace.json'} and {len(figs)} figures")
    return 0
