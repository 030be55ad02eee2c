"""Default runs of ``jcausal gce mnist``, timed end to end and checked against the paper's finding.

    python -m benchmarks.gce_mnist_runs seeds [--seeds 0 1 2] [--data DIR] [--out benchmarks/results]
    python -m benchmarks.gce_mnist_runs 149 [--seeds 0 1 2] [--data DIR] [--out benchmarks/results]

``seeds``: ``jcausal gce mnist`` with no options (MNIST 3/8, K = 1, L = 7) for each seed, each a
fresh process in a fresh folder (classifier training included in the time). ``149``: the paper's
second explainer (appendix E.1, Figures 13-14), ``--classes 1 4 9 --K 2 --L 2 --lam 0.1``.

A ``seeds`` run answers when (issue 24, item 3) every alpha's information flow is at least 5x every
beta's, resampling each alpha lowers the classifier's accuracy by at least 20 points from the
re-encoded accuracy, and resampling any beta by at most 5, within 15 minutes. A ``149`` run answers
when (item 4) both alphas' flows are at least 5x every beta's; item 3's accuracy checks are
reported too. ``--rescore`` recomputes the verdicts of the committed JSON without running. Writes
``gce_mnist_seeds.json`` / ``gce_mnist_149.json`` with every run's summary and verdict, a figure
of flows and accuracy drops, and copies of each run's figures under ``gce_mnist_<mode>/``.

``--check`` (what CI runs after the test suite, issue 30): the command's seed-0 run (or
``--seeds``), each in a fresh process and a temporary folder, held to :func:`findings`, the
assertions the slow tests made on the same run before it left the test suite; prints each finding
and exits 1 when one fails. Nothing is written under ``--out``.

    python -m benchmarks.gce_mnist_runs seeds --check
    python -m benchmarks.gce_mnist_runs 149 --check
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_DATA, RESULTS, machine, report_checks, require_mnist, write_json

MODES = {"seeds": ["--classes", "3", "8"],
         "149": ["--classes", "1", "4", "9", "--K", "2", "--L", "2", "--lam", "0.1"]}
BUDGET_SECONDS = 15 * 60


def _flows_and_drops(summary: dict) -> tuple[np.ndarray, np.ndarray]:
    """A run's information flow per factor and the accuracy drop when each factor is resampled
    (from the re-encoded accuracy: every resampled image is a reconstruction), causal first."""
    acc = summary["accuracy"]
    flows = np.asarray(list(summary["flow_nats"].values()))
    return flows, acc["reencoded"] - np.asarray(list(acc["resampled"].values()))


def verdict(summary: dict, seconds: float, mode: str = "seeds") -> dict:
    """Item 3's numbers for one run's ``summary.json`` (accuracies are fractions of a validation
    set: a 1e-6 tolerance absorbs float32 round-off at the thresholds)."""
    K = summary["K"]
    flows, drops = _flows_and_drops(summary)
    ratio = float(flows[:K].min() / max(flows[K:].max(), 1e-12)) if flows.size > K else float("inf")
    out = {"min_alpha_over_max_beta_flow": ratio, "alpha_drops": drops[:K].tolist(),
           "max_beta_drop": float(drops[K:].max()) if drops.size > K else 0.0, "seconds": seconds}
    tol = 1e-6
    out["flows_5x"] = bool(ratio >= 5)
    out["accuracy_drops_ok"] = bool(min(out["alpha_drops"]) >= 0.20 - tol
                                    and out["max_beta_drop"] <= 0.05 + tol)
    out["within_15_minutes"] = seconds <= BUDGET_SECONDS
    out["answers"] = out["flows_5x"] and (out["accuracy_drops_ok"] or mode == "149")
    return out


FIGURES = ("flow.png", "accuracy.png", "fine_sweep.png", "sweeps_0.png", "training.png")


def findings(summary: dict, mode: str, figures: dict[str, int] | None = None) -> dict[str, bool]:
    """The paper's findings on one run's ``summary.json``, each by name: the assertions of the slow
    tests ``tests/gce/test_mnist_slow.py`` (``seeds``) and ``tests/gce/test_mnist149_slow.py``
    (``149``), with their thresholds, before the runs left the test suite. ``figures`` maps the
    run's figure files to their sizes in bytes (``None``: not checked); a summary without its
    ``fine_sweep`` record (runs before issue 30) has no fine-sweep finding."""
    K = summary["K"]
    flows, drops = _flows_and_drops(summary)
    out = {"classifier validation accuracy >= 0.95": summary["classifier_val_accuracy"] >= 0.95,
           "no plateau": summary["plateau"] is None}
    if mode == "seeds":
        out["training finished: every step, finite"] = (summary["nonfinite_step"] is None
                                                         and summary["steps"] == summary["config"]["steps"])
        out["alpha's flow > 0.1 nats"] = bool(flows[0] > 0.1)
        out["alpha's flow >= 5x every beta's"] = bool(flows[0] >= 5 * flows[1:].max())
        out["resampling alpha drops accuracy >= 20 points"] = bool(drops[0] >= 0.20)
        out["resampling any beta drops accuracy <= 5 points"] = bool(np.all(drops[1:] <= 0.05))
    else:
        out["K = 2"] = K == 2
        out["both alphas' flows > 0.1 nats"] = bool(flows[:2].min() > 0.1)
        out["both alphas' flows >= 5x every beta's"] = bool(flows[:2].min() >= 5 * flows[2:].max())
    fine = summary.get("fine_sweep")
    if fine is not None:
        if mode == "149":
            out["fine sweep: 3 classes, probabilities sum to 1"] = (
                fine["classes"] == 3 and fine["max_probability_sum_error"] <= 1e-4)
        out["fine sweep changes the decision for >= half its inputs"] = (
            fine["inputs"] > 0 and fine["decision_changes"] / fine["inputs"] >= 0.5)
    if figures is not None:
        out["figures written (> 1000 bytes)"] = all(figures.get(name, 0) > 1000 for name in FIGURES)
    return out


def check(mode: str, seeds: list[int], data: Path, extra: list[str]) -> bool:
    """Run ``jcausal gce mnist`` (``mode``'s options) for each seed and print :func:`findings`;
    whether every finding holds."""
    require_mnist(data)
    ok = True
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            run = run_once([*MODES[mode], "--seed", str(seed), *extra], data, Path(tmp) / "figures", mode)
            sizes = {p.name: p.stat().st_size for p in (Path(tmp) / "figures").glob("*.png")}
        if run["returncode"] != 0:
            print(f"{mode} seed {seed}: jcausal gce mnist failed ({run['returncode']}): {run['stderr']}")
            ok = False
            continue
        found = findings(run["summary"], mode, sizes)
        s = run["summary"]
        print(f"{mode} seed {seed}: {run['verdict']['seconds'] / 60:.1f} min; flows (nats) "
              f"{ {k: round(v, 4) for k, v in s['flow_nats'].items()} }; accuracy re-encoded "
              f"{s['accuracy']['reencoded']:.3f}, resampled "
              f"{ {k: round(v, 3) for k, v in s['accuracy']['resampled'].items()} }; fine sweep "
              f"{s['fine_sweep']}")
        ok = report_checks(found) and ok
    print(f"gce_mnist_runs {mode} --check: " + ("every finding holds" if ok else "a finding FAILED"))
    return ok


def run_once(args: list[str], data: Path, keep: Path, mode: str) -> dict:
    """One ``jcausal gce mnist`` process in a fresh folder; its summary, verdict and figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "jcausal", "gce", "mnist", "--data", str(data), "--out", str(out),
               "--quiet", *args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"args": args, "returncode": proc.returncode, "stderr": proc.stderr[-2000:],
                    "seconds": seconds}
        summary = json.loads((out / "summary.json").read_text())
        keep.mkdir(parents=True, exist_ok=True)
        for name in FIGURES:
            if (out / name).is_file():
                shutil.copyfile(out / name, keep / name)
        summary.pop("files", None)
        return {"args": args, "returncode": 0, "summary": summary, "verdict": verdict(summary, seconds, mode),
                "stderr": proc.stderr[-2000:]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (--check: 0)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--rescore", action="store_true", help="recompute the verdicts of the saved JSON")
    ap.add_argument("--check", action="store_true",
                    help="run seed 0 (or --seeds) and assert the findings; exit 1 if one fails; writes "
                         "nothing")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more options for every run")
    args = ap.parse_args(argv)
    if args.check:
        if not check(args.mode, args.seeds or [0], args.data, args.extra):
            raise SystemExit(1)
        return {}
    path = args.out / f"gce_mnist_{args.mode}.json"
    if args.rescore:
        result = json.loads(path.read_text())
        for r in result["runs"]:
            if "summary" in r:
                r["verdict"] = verdict(r["summary"], r["verdict"]["seconds"], args.mode)
        runs = result["runs"]
    else:
        require_mnist(args.data)
        runs = []
        for seed in args.seeds or [0, 1, 2]:
            run = run_once([*MODES[args.mode], "--seed", str(seed), *args.extra], args.data,
                           args.out / f"gce_mnist_{args.mode}" / f"seed{seed}", args.mode)
            runs.append(run)
            v = run.get("verdict")
            print(f"seed {seed}: " + (json.dumps(v) if v else
                                      f"failed ({run['returncode']}): {run['stderr']}"), flush=True)
        result = {"mode": args.mode, "args": MODES[args.mode] + args.extra, "machine": machine(),
                  "runs": runs}
    ok = [r.get("verdict", {}).get("answers", False)
          and (r["verdict"]["within_15_minutes"] or args.mode == "149") for r in runs]  # item 3 is timed
    result["answered"] = f"{sum(ok)}/{len(ok)}"
    write_json(path, result)
    figure(result, args.out / f"gce_mnist_{args.mode}.png")
    print(f"answered {result['answered']}")
    return result


def figure(result: dict, path: Path) -> None:
    """Per run: information flow per factor, and the accuracy drop when each factor is resampled."""
    import matplotlib.pyplot as plt

    from jcausal._src.io import atomic_savefig

    runs = [r for r in result["runs"] if "summary" in r]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    width = 0.8 / max(len(runs), 1)
    for i, r in enumerate(runs):
        s = r["summary"]
        names = list(s["flow_nats"])
        x = np.arange(len(names)) + i * width
        seed, minutes = s["seed"], r["verdict"]["seconds"] / 60
        axes[0].bar(x, list(s["flow_nats"].values()), width, label=f"seed {seed} ({minutes:.1f} min)")
        re = s["accuracy"]["reencoded"]
        axes[1].bar(x, [100 * (re - v) for v in s["accuracy"]["resampled"].values()], width,
                    label=f"seed {seed}")
        for ax in axes:
            ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    axes[0].set_ylabel("information flow (nats)")
    axes[1].axhline(20, color="tab:red", lw=0.8, ls="--")
    axes[1].axhline(5, color="tab:blue", lw=0.8, ls="--")
    axes[1].set_ylabel("accuracy drop when resampled (points)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"jcausal gce mnist {' '.join(result['args'])}: answered {result['answered']}")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
