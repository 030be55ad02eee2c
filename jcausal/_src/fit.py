"""The one fit loop every trainer uses: a step function in, one policy for everything around it.

A trainer supplies only its jitted step ``step(state, data, idx, key) -> (new_state, metrics)``
(``state`` any pytree, e.g. ``(params, opt_state)``; ``data`` a pytree of ``(n, ...)`` arrays that
stays on the device and is passed as an argument, never closed over; ``idx`` ``(batch,)`` int
indices of this batch; ``key`` this step's PRNG key; ``metrics`` a dict of scalars holding
``"loss"``) and, for checkpoints, a ``save(path, state, meta)``. :func:`fit` does the rest, the same
way for every trainer (as optax's update rules or blackjax's kernels leave the loop to one place):

- batches: per epoch a ``jax.random.permutation`` of the ``n`` rows from the key, fixed-shape
  batches of ``batch_size``, the remainder dropped; per-step keys by ``jax.random.fold_in``;
- non-finite losses: training stops at the first step whose loss is NaN/inf, the state kept is the
  last one whose loss was measured finite, and the step is reported (``FitResult.nonfinite_step``);
  each loss is read on the host once the next step is dispatched, so the device does not wait;
- checkpoints every ``checkpoint_every`` steps, at the end and at a non-finite stop;
- history every ``log_every`` steps (the last value, or the mean over the window); a progress bar.

The steps run as a Python loop of jitted calls: XLA:CPU runs convolutions inside a scanned loop
much slower than as separate calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jcausal._src.checks import require_int
from jcausal._src.xla import jit

__all__ = ["FitResult", "Loop", "TrainingDiverged", "batch_order", "fit"]


class TrainingDiverged(FloatingPointError):
    """A training loss became NaN/inf (the message names the step or epoch). Every trainer raises
    it, so a caller (the command line: exit status 3) tells failed training from other errors."""


@dataclasses.dataclass(frozen=True)
class Loop:
    """Settings of the loop around the steps, shared by every trainer (validated when built).

    Fields:
      checkpoint: path written with the trainer's ``save`` every ``checkpoint_every`` steps, at the
        end, and with the last good state at a non-finite stop; ``None``: no checkpoints.
      checkpoint_every: steps between checkpoints (>= 1).
      log_every: steps between history records (>= 1).
      progress: show a tqdm bar with the latest metrics.
    """

    checkpoint: str | Path | None = None
    checkpoint_every: int = 500
    log_every: int = 1
    progress: bool = True

    def __post_init__(self):
        require_int(self.checkpoint_every, "checkpoint_every")
        require_int(self.log_every, "log_every")


class FitResult(NamedTuple):
    """What every trainer returns.

    Fields:
      state: the fitted state (a pytree; each trainer documents what it holds, e.g. parameters).
      history: ``"step"`` (updates applied) and every metric of the step, one value per record.
      steps: updates applied to ``state``.
      nonfinite_step: the 1-based step whose loss was NaN/inf (training stopped there), or ``None``.
      checkpoint: the path of the last checkpoint written, or ``None``.
      aux: trainer-specific extras (e.g. ``{"model": module}``, ``{"index": NNIndex}``), or ``None``.
    """

    state: Any
    history: dict[str, list[float]]
    steps: int
    nonfinite_step: int | None = None
    checkpoint: Path | None = None
    aux: dict | None = None

    @property
    def params(self) -> Any:
        """The fitted state (the trainers of parameters return the parameters as ``state``)."""
        return self.state

    @property
    def model(self) -> Any:
        """The trained module (trainers of NNX modules), or ``None``."""
        return (self.aux or {}).get("model")

    @property
    def index(self) -> Any:
        """The nearest-neighbour index of the training data (the counterfactual GAN), or ``None``."""
        return (self.aux or {}).get("index")


@partial(jit, static_argnames=("n", "batches", "batch_size"))
def _order(key, epoch, n: int, batches: int, batch_size: int):
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    return perm[: batches * batch_size].reshape(batches, batch_size)


def batch_order(key: jax.Array, epoch: int, n: int, batch_size: int) -> jax.Array:
    """The batches of one epoch: ``(n // batch_size, batch_size)`` int32 row indices, a seeded
    permutation of ``range(n)`` (the remainder dropped), the same for the same ``key`` and ``epoch``."""
    return _order(key, epoch, n, n // batch_size, batch_size)


def _num_rows(data) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data must hold at least one (n, ...) array")
    n = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
    if n < 1 or any(np.ndim(a) < 1 or np.shape(a)[0] != n for a in leaves):
        raise ValueError(f"every array of data needs the same leading length n >= 1, got "
                         f"{[np.shape(a)[:1] for a in leaves]}")
    return n


def _check(steps, batch_size, n) -> None:
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        require_int(v, name)
    if batch_size > n:
        raise ValueError(f"batch_size = {batch_size} exceeds the {n} rows of data")


class _Log:
    """History records, every ``every`` steps: the last value of each metric, or the window's mean."""

    def __init__(self, every: int, average: bool):
        self.every, self.average = every, average
        self.history: dict[str, list[float]] = {"step": []}
        self.window: dict[str, Any] = {}
        self.count = 0

    def add(self, metrics: dict) -> None:
        self.count += 1
        if not self.average:
            self.window = dict(metrics)
            return
        for k, v in metrics.items():
            self.window[k] = v if k not in self.window else self.window[k] + v

    def record(self, done: int, extra: dict) -> dict[str, float]:
        scale = 1.0 / self.count if self.average else 1.0
        row = {k: float(v) * scale for k, v in self.window.items()} | {k: float(v) for k, v in extra.items()}
        self.history["step"].append(done)
        for k, v in row.items():
            self.history.setdefault(k, []).append(v)
        self.window, self.count = {}, 0
        return row

    def last(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.history.items() if k != "step" and v}


class _Run:
    """The loop's bookkeeping: the last good state, history records and checkpoints. Each step is
    settled (its loss read on the host) after the next one is dispatched."""

    def __init__(self, state, steps: int, loop: Loop, log: _Log, save, evaluate, bar):
        self.state, self.good, self.good_done, self.done = state, state, 0, 0
        self.nonfinite, self.written = None, None
        self.steps, self.loop, self.log = steps, loop, log
        self.save, self.evaluate, self.bar = save, evaluate, bar
        self.ckpt = None if loop.checkpoint is None else Path(loop.checkpoint)

    def settle(self, t: int, before, after, metrics: dict) -> bool:
        """Account for step ``t`` (0-based): ``False`` when its loss is NaN/inf (training stops)."""
        loss = float(metrics["loss"])  # measured on `before` (t updates applied)
        if not np.isfinite(loss):
            self.nonfinite, self.state, self.done = t + 1, self.good, self.good_done
            self.bar.set_postfix_str(f"non-finite loss at step {t + 1}; stopped")
            return False
        self.good, self.good_done = before, t
        self.state, self.done = after, t + 1
        self.log.add(metrics)
        if self.done % self.loop.log_every == 0 or self.done == self.steps:
            row = self.log.record(self.done, self.evaluate(after) if self.evaluate is not None else {})
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()})
        if self.ckpt is not None and self.done % self.loop.checkpoint_every == 0:
            self.save(self.ckpt, after, {"step": self.done, **{k: float(v) for k, v in metrics.items()}})
            self.written = self.ckpt
        return True

    def finish(self) -> FitResult:
        """The final checkpoint (unless the last periodic one holds this state) and the result."""
        if self.ckpt is not None and (self.written is None or self.nonfinite is not None
                                      or self.done % self.loop.checkpoint_every):
            self.save(self.ckpt, self.state, {"step": self.done, "nonfinite_step": self.nonfinite,
                                              **self.log.last()})
            self.written = self.ckpt
        return FitResult(self.state, self.log.history, self.done, self.nonfinite, self.written)


def fit(step: Callable, state: Any, data: Any, *, key: jax.Array, steps: int, batch_size: int,
        loop: Loop | None = None, save: Callable | None = None, desc: str = "fit", average: bool = False,
        evaluate: Callable | None = None) -> FitResult:
    """Run ``steps`` updates of ``step`` on seeded batches of ``data``.

    Args:
      step: ``step(state, data, idx, key) -> (new_state, metrics)``, jitted; ``metrics`` a dict of
        scalar arrays with ``"loss"``, measured on the incoming ``state``.
      state: the initial state (pytree).
      data: pytree of ``(n, ...)`` arrays (put on the device once; passed to every step).
      key: PRNG key: batch orders (per epoch) and per-step keys both derive from it.
      steps: updates to run (>= 1).
      batch_size: rows per batch, ``1 <= batch_size <= n``; ``n // batch_size`` batches per epoch.
      loop: :class:`Loop` (checkpoints, history resolution, progress bar); default ``Loop()``.
      save: ``save(path, state, meta)`` writing a checkpoint atomically (needed with
        ``loop.checkpoint``); ``meta`` holds ``"step"`` and the latest metrics (and
        ``"nonfinite_step"`` in the final one).
      desc: progress bar label.
      average: history records hold the mean of each metric over the ``log_every`` steps since
        the previous record (e.g. one value per epoch) instead of the last step's value.
      evaluate: ``evaluate(state) -> dict`` of extra scalars recorded with each history record
        (e.g. validation accuracy).

    Returns:
      :class:`FitResult`. A NaN/inf loss at step ``k`` stops training: ``state`` is the last state
      whose loss was measured finite (the input of step ``k - 1``; the initial state if ``k = 1``).
    """
    from tqdm.auto import tqdm

    loop = Loop() if loop is None else loop
    n = _num_rows(data)
    _check(steps, batch_size, n)
    if loop.checkpoint is not None and save is None:
        raise ValueError("a checkpoint path needs a save(path, state, meta) function")
    k_perm, k_step = jax.random.split(key)
    nb = n // batch_size
    bar = tqdm(range(steps), desc=desc, disable=not loop.progress, leave=False)
    run = _Run(state, steps, loop, _Log(loop.log_every, average), save, evaluate, bar)
    pending, order = None, None
    for t in bar:
        epoch, b = divmod(t, nb)
        if b == 0:
            order = batch_order(k_perm, epoch, n, batch_size)
        new, metrics = step(state, data, order[b], jax.random.fold_in(k_step, t))
        # settle the previous step while this one runs: one host round trip per step, not a stall
        if pending is not None and not run.settle(*pending):
            break
        pending, state = (t, state, new, metrics), new
    else:
        if pending is not None:
            run.settle(*pending)
    bar.close()
    return run.finish()
