"""The MNIST counterfactual GAN (slow; skipped without the MNIST files): validity over 200 test digits
with random target classes, distances, and the contrastive figure of one misclassified digit."""

import json
import time

import jax
import numpy as np
import pytest
from flax import nnx

from jcausal.models import Loop
from jcausal.tracer import (
    CounterfactualGAN,
    GANObjective,
    contrastive,
    counterfactuals,
    model_labels,
    nn_index,
    train_gan,
)

# 1000 GAN steps (measured on this suite's AlexNet: validity 93.0% at 1000 steps, 96.5% at 1500, 99.0% at
# 3000; the assertion is >= 80%)
STEPS, LAM, BATCH, CHANNELS, MIN_CONFIDENCE = 1000, 0.9, 32, 16, 0.99


@pytest.mark.slow
def test_mnist_counterfactuals_validity_and_contrastive(mnist_alexnet, tmp_path):
    from jcausal.plot.counterfactual import plot_contrastive, plot_counterfactuals

    model, (x_all, _, x_te, y_te) = mnist_alexnet
    # y* is a model output: x_nn is drawn from the training digits the classifier assigns to y* with
    # probability >= 0.99 (measured: validity 77-81% without the filter, 99% with it)
    y_all, p_all = model_labels(model, x_all)
    keep = p_all.max(1) >= MIN_CONFIDENCE
    x_tr, y_model = x_all[keep], y_all[keep]
    index = nn_index(x_tr, y_model, 10)
    gan = CounterfactualGAN(10, latent=16, channels=CHANNELS, rngs=nnx.Rngs(0))
    t0 = time.perf_counter()
    res = train_gan(gan, x_tr, y_model, key=jax.random.key(0), steps=STEPS, lam=LAM, batch_size=BATCH,
                    index=index, objective=GANObjective(distance="squared"),
                    loop=Loop(checkpoint=tmp_path / "gan.msgpack", progress=False))
    t_train = time.perf_counter() - t0
    assert res.nonfinite_step is None and res.steps == STEPS
    pred, _ = model_labels(model, x_te[:200])
    targets = (pred + np.random.default_rng(0).integers(1, 10, 200)) % 10
    r = counterfactuals(gan, model, x_te[:200], targets, index, x_train=x_tr)
    s = r.summary()
    print(f"\nMNIST counterfactual GAN: {len(x_tr)} confident training digits, {STEPS} steps in "
          f"{t_train:.0f} s; {s}")
    (tmp_path / "summary.json").write_text(json.dumps({"train_seconds": t_train, **s}))
    assert s["changed"] == 200
    assert s["validity_percent"] >= 80.0
    # the counterfactual moves towards the target-class neighbour
    assert s["mean_dist_nn"] < s["mean_dist_input_nn"]
    plot_counterfactuals(r, n=10).savefig(tmp_path / "grid.png")
    all_pred, _ = model_labels(model, x_te)
    wrong = np.flatnonzero(all_pred != y_te)
    assert len(wrong) > 0
    i = int(wrong[0])
    c = contrastive(model, gan, x_te[i], int(y_te[i]), index, x_train=x_tr, layers=["convs.*", "fcs.*"],
                    patch=4, stride=2)
    assert c.prediction != c.label and c.original.target == c.prediction
    assert len(c.original.contributions) >= 1 and len(c.counterfactual_explanation.contributions) >= 1
    fig = plot_contrastive(c)
    fig.savefig(tmp_path / "contrastive.png")
    assert (tmp_path / "contrastive.png").stat().st_size > 0
    print(f"contrastive: digit {i} label {c.label} predicted {c.prediction} -> counterfactual predicted "
          f"{c.cf_prediction} (||x* - x|| = {c.dist_input:.2f})")
