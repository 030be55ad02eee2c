"""ACE of a saved MLP classifier on tabular rows (the ACE paper's Iris experiment, section 5.1 and
Figure 2; ``jcausal ace iris`` and ``jcausal ace file``): Phase I (eqn 2 over the rows by default,
or any registered estimator) and Phase II on the class probabilities, the causal-regressor figure,
and the per-curve checks and table the command prints.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jcausal._src.wrap import wrap
from jcausal.ace import ACEResult, Execution, estimators, explain, make_estimator
from jcausal.models import MLP
from jcausal.plot import plot_causal_regressors

__all__ = ["SMALL_SPREAD", "UNIT_TOL", "effect_report", "effect_table", "mlp_ace"]

SMALL_SPREAD = 5e-4  # a Phase I curve with a smaller std over the grid may print as flat (0.000)
UNIT_TOL = 1e-4  # expectations of probabilities outside [-tol, 1 + tol] are flagged


def mlp_ace(model: MLP, X, features, *, method: str, num_alphas: int, max_order: int, rank=None,
            seed: int = 0, batch_size: int = 64, names=None, progress: bool = False):
    """ACE of the class probabilities of an :class:`jcausal.models.MLP` classifier (logits out).

    Call under ``jax.enable_x64(True)`` with float64 rows ``X`` for float64 (the parameters take
    ``X``'s dtype; ``model`` is updated in place). The model enters through the one contract
    (:func:`jcausal.wrap`): with ``head=jax.nn.softmax``, or, for an estimator that takes a smooth
    ``head`` (Gauss-Newton), as logits with the softmax as the estimator's head; ``wrap`` finds the
    eqn-2 split (the first layer once per row, a rank-one update per intervention). The estimator is
    asked which settings it takes (``key`` from ``seed``, ``head``, ``rank``), never named.

    Args:
      model: the MLP (``k`` inputs, ``m`` logits), e.g. loaded from a checkpoint.
      X: ``(n, k)`` rows: eqn 2 averages over them; an eqn-4 method is checked against eqn 2 on them.
      features: the ``F`` feature indices to intervene on.
      method: a registered estimator name; num_alphas, max_order: the grid and Phase II's order.
      names: ``(feature_names, output_names)`` (``k`` and ``m`` names) for the figure.

    Returns:
      ``(ACEResult, figure)``.
    """
    from tqdm.auto import tqdm

    steps = tqdm(total=2, desc="jcausal ace", disable=not progress, leave=False)
    Xd = np.asarray(X)
    nnx.update(model, jax.tree.map(lambda a: jnp.asarray(a, Xd.dtype), nnx.state(model, nnx.Param)))
    steps.set_postfix_str(f"Phase I ({method})")
    takes_head = estimators.takes_setting(method, "head")
    model = wrap(model, Xd[0], head=None if takes_head else jax.nn.softmax)
    key = jax.random.key(seed) if estimators.takes_setting(method, "key") else None
    est = make_estimator(method, rank=rank, key=key, head=jax.nn.softmax if takes_head else None)
    res = explain(model, Xd, features=list(features), num_alphas=num_alphas, max_order=max_order,
                  method=est, data=Xd, run=Execution(batch_size=batch_size))
    steps.update()
    steps.set_postfix_str("figure")
    feature_names, output_names = names if names is not None else (None, None)
    feature_names = [f"x{i}" for i in range(Xd.shape[1])] if feature_names is None else list(feature_names)
    fig = plot_causal_regressors(res, feature_names=[feature_names[i] for i in features],
                                 output_names=output_names)
    steps.update()
    steps.close()
    return res, fig


def effect_report(res: ACEResult, feature_names, output_names) -> dict:
    """Per-curve checks: Phase I spread ``(F, m)``, order 0 despite a spread, probabilities outside
    [0, 1]; with the warnings to print."""
    E = np.asarray(res.expectations, np.float64)  # (F, A, m)
    spread = E.std(axis=1)  # (F, m)
    lo, hi = E.min(axis=1), E.max(axis=1)
    orders = np.asarray(res.orders)
    flat = (orders == 0) & (spread >= SMALL_SPREAD)
    outside = (lo < -UNIT_TOL) | (hi > 1.0 + UNIT_TOL)
    rep = {
        "spread": spread, "flat_mask": flat, "outside_mask": outside,
        "feature_names": feature_names, "output_names": output_names,
        "range": [float(E.min()), float(E.max())],
        "flat_but_spread": [{"feature": feature_names[f], "output": output_names[j],
                             "spread": float(spread[f, j])} for f, j in np.argwhere(flat)],
        "outside": [{"feature": feature_names[f], "output": output_names[j], "min": float(lo[f, j]),
                     "max": float(hi[f, j])} for f, j in np.argwhere(outside)],
        "warnings": [],
    }
    if outside.any():
        rep["warnings"].append(
            f"{int(outside.sum())} curve(s) have expectations of probabilities outside [0, 1] "
            f"(range [{E.min():.3f}, {E.max():.3f}], marked !): the Phase I estimate is not an "
            "expectation there (e.g. the second-order expansion far from the definition, eqn 2)")
    if flat.any():
        rep["warnings"].append(
            f"Phase II chose order 0 (no effect) for {int(flat.sum())} curve(s) whose Phase I values "
            f"spread (std up to {spread[flat].max():.3g}, marked *): their row shows the Phase I "
            "values minus their mean instead; such a curve is noise or estimator error, not 'no effect'")
    return rep


def _cell(v: float, mark: str = "") -> str:
    """A signed value that never prints as +-0.000 unless it is zero."""
    text = f"{v:+.1e}" if v != 0.0 and abs(v) < 5e-4 else f"{v:+.3f}"
    return f"{text + mark:>9s}"


def effect_table(res: ACEResult, report: dict) -> str:
    """The ACE table: per output, one row per feature with the selected order, the Phase I spread,
    and ACE at low / mid / high (``*``: Phase I values, order 0 chosen despite a spread; ``!``:
    expectations outside [0, 1])."""
    feature_names, output_names = report["feature_names"], report["output_names"]
    lo = np.asarray(res.regressor.low)[:, 0]
    hi = np.asarray(res.regressor.high)[:, 0]
    grid = np.stack([lo, 0.5 * (lo + hi), hi], axis=1)  # (F, 3)
    ace = np.asarray(res.ace(grid))  # (F, 3, m)
    E = np.asarray(res.expectations, np.float64)
    alphas = np.asarray(res.alphas, np.float64)
    orders = np.asarray(res.orders)
    spread = report["spread"]
    width = max(len(n) for n in feature_names) + 2
    lines = ["", "Average causal effect ACE(a) = E[y | do(x = a)] - baseline at a = low / mid / high;",
             "spread = std of the Phase I curve E[y | do(x = a)] over the grid", ""]
    for j, out_name in enumerate(output_names):
        lines.append(f"{out_name}")
        lines.append(f"  {'feature':{width}s}order  spread      low      mid     high")
        for f, name in enumerate(feature_names):
            a, mark = ace[f, :, j], ""
            if report["flat_mask"][f, j]:  # Phase I values, centred, at low / mid / high
                centred = E[f, :, j] - E[f, :, j].mean()
                a, mark = np.interp(grid[f], alphas[f], centred), "*"
            flag = "  !" if report["outside_mask"][f, j] else ""
            s = spread[f, j]
            s_text = f"{s:.1e}" if 0 < s < 5e-4 else f"{s:.3f}"
            lines.append(f"  {name:{width}s}{orders[f, j]:5d} {s_text:>7s}"
                         + "".join(_cell(float(v), mark) for v in a) + flag)
    return "\n".join(lines) + "\n"
