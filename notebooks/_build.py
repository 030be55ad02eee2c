"""Write the Colab-ready notebooks of this folder from plain Python cell lists (run from the repo
root: ``python notebooks/_build.py``). Each notebook has a first cell that installs jcausal from the
repository when run in Colab, and a ``SMALL`` switch (environment ``JCAUSAL_NOTEBOOK_SMALL=1``, set
by the test suite) for settings that execute headless in a few minutes."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

INSTALL = '''# In Colab: install jcausal from the repository (nothing else is fetched at run time).
import os, sys
if "google.colab" in sys.modules:
    !pip install -q "git+{os.environ.get('JCAUSAL_REPO', 'https://github.com/jcausal/jcausal')}"
SMALL = os.environ.get("JCAUSAL_NOTEBOOK_SMALL") == "1"   # small settings for the test suite
if SMALL:   # headless in the test suite: no inline backend (it needs matching IPython/matplotlib)
    import matplotlib
    matplotlib.use("Agg")
OUT = os.environ.get("JCAUSAL_NOTEBOOK_OUT", "notebook-out")
os.makedirs(OUT, exist_ok=True)'''

NOTEBOOKS = {
    "01_ace_iris.ipynb": [
        ("md", "# ACE on Iris, end to end\n\nChattopadhyay et al., *Neural Network Attributions: A Causal "
               "Perspective* (ICML 2019), section 5.1: a 4-8-3 MLP on Iris, the interventional expectation "
               "of every class under do(x_i = a) by its definition (eqn 2, the mean of the model over the "
               "data with x_i set to a), Bayesian polynomial causal regressors, the ACE curves and local "
               "saliency."),
        ("code", INSTALL),
        ("code", '''import jax, numpy as np, matplotlib.pyplot as plt
from flax import nnx
from jcausal.data import load_iris, train_test_split
from jcausal.models import MLP, accuracy, functional, split_functional, train

data = load_iris()
tr, te = train_test_split(len(data.y), test_size=30, seed=0)
model = MLP((4, 8, 3), rngs=nnx.Rngs(0))
train(model, data.X[tr], data.y[tr], key=jax.random.key(0), epochs=100 if SMALL else 300,
      batch_size=16, learning_rate=1e-2, progress=False)
apply, params = functional(model)
print("held-out accuracy", accuracy(apply, params, data.X[te], data.y[te]))'''),
        ("md", "## Phase I and II in one call\n\nThe model is handed as its first affine layer plus the "
               "rest (`split_functional`), so each intervention is a rank-one update of the first layer."),
        ("code", '''from jcausal.ace import explain
from jcausal.plot import plot_causal_regressors

split, sparams = split_functional(model)
probs = split.then(jax.nn.softmax)
res = explain(probs, data.X[tr], params=sparams, num_alphas=20, max_order=5)
print("orders (feature x class):\\n", np.asarray(res.orders))
fig = plot_causal_regressors(res, feature_names=data.feature_names, output_names=data.target_names)
fig.savefig(f"{OUT}/01_ace_curves.png", dpi=100)'''),
        ("md", "## Local causal saliency\n\nACE of each feature at an input's own value (section 5.2)."),
        ("code", '''sal = np.asarray(res.local_saliency(data.X[te][:6]))   # (6 inputs, 4 features, 3 classes)
fig, ax = plt.subplots(figsize=(6, 3))
im = ax.imshow(sal[:, :, 2].T, cmap="RdBu_r", vmin=-abs(sal).max(), vmax=abs(sal).max())
ax.set_yticks(range(4), data.feature_names); ax.set_xlabel("test input"); fig.colorbar(im)
ax.set_title("local ACE on P(virginica)")
fig.savefig(f"{OUT}/01_local_saliency.png", dpi=100, bbox_inches="tight")'''),
    ],
    "02_exact_vs_approximate_hessian.ipynb": [
        ("md", "# Exact vs approximate: every Phase I estimator against the definition\n\nOn an MLP trained "
               "on MNIST digits (the shipped test set, or scikit-learn's 8x8 digits when it is absent), "
               "each estimator's error against eqn 2 over all rows and its time per (feature, alpha) "
               "point. The second-order expansion (eqn 4) is exact for what it computes, but on a "
               "trained network that quantity can be far from the definition."),
        ("code", INSTALL),
        ("code", '''import time, jax, numpy as np, matplotlib.pyplot as plt
from flax import nnx
from jcausal.ace import input_stats, interventional_expectation
from jcausal.ace.estimators import Definition
from jcausal.models import MLP, functional, split_functional, train

mnist = os.environ.get("JCAUSAL_DATA", "../../shared/data/mnist")
try:
    from jcausal.data import load_mnist
    d = load_mnist(mnist, flatten=True)
    X, y = d.x_train, d.y_train
except FileNotFoundError:
    from jcausal.data import load_digits
    d = load_digits(); X, y = d.X, d.y
if SMALL:
    X, y = X[:600], y[:600]
k = X.shape[1]
model = MLP((k, 64, 32, 10), activation="softplus", rngs=nnx.Rngs(0))
train(model, X, y, key=jax.random.key(0), epochs=2 if SMALL else 8, batch_size=64, learning_rate=1e-3,
      progress=False)
apply, params = functional(model)
split, sparams = split_functional(model)
stats = input_stats(X, low=0.0, high=1.0)
feats = [int(i) for i in np.argsort(np.diag(np.asarray(stats.cov)))[::-1][:3 if SMALL else 6]]
alphas = np.linspace(0, 1, 6)
probs = lambda p, x: jax.nn.softmax(apply(p, x))'''),
        ("code", '''def run(label, f, p, **kw):
    interventional_expectation(f, stats, alphas, params=p, features=feats, check_expansion=False, **kw)
    t = time.perf_counter()
    E = interventional_expectation(f, stats, alphas, params=p, features=feats, check_expansion=False, **kw)
    E = np.asarray(jax.block_until_ready(E))
    return label, (time.perf_counter() - t) / E[..., 0].size, E

ref = run("eqn 2, split", split.then(jax.nn.softmax), sparams, data=X)
rows = [ref,
        run("eqn 2, plain f", probs, params, data=X, method="definition"),
        run("eqn 2, 200 rows", split.then(jax.nn.softmax), sparams, data=X,
            method=Definition(num_rows=200, key=jax.random.key(0))),
        run("eqn 4 directional", probs, params, method="directional"),
        run("eqn 4 exact", probs, params, method="exact")]
ace = lambda E: E - E.mean(1, keepdims=True)
scale = np.abs(ace(ref[2])).max()
for label, t, E in rows:
    err = np.abs(ace(E) - ace(ref[2])).max() / scale
    print(f"{label:20s} {t * 1e3:8.2f} ms/point   ACE error / max|ACE| {err:.2e}")'''),
        ("code", '''fig, ax = plt.subplots(figsize=(5, 3.5))
for label, t, E in rows:
    err = max(np.abs(ace(E) - ace(ref[2])).max() / scale, 1e-8)
    ax.scatter(t * 1e3, err); ax.annotate(label, (t * 1e3, err), fontsize=7)
ax.set_xscale("log"); ax.set_yscale("log")
ax.set_xlabel("ms per point"); ax.set_ylabel("ACE error vs eqn 2 (relative)")
ax.set_title("Pareto: time vs accuracy against the definition")
fig.savefig(f"{OUT}/02_pareto.png", dpi=100, bbox_inches="tight")'''),
    ],
    "03_generative_causal_explanations.ipynb": [
        ("md", "# Generative causal explanations\n\nO'Shaughnessy et al., *Generative causal explanations "
               "of black-box classifiers* (NeurIPS 2020): a generative map whose K causal latents carry "
               "the information flow I(alpha; Y) to the classifier while all K + L latents model the "
               "data. First the section 4 linear-Gaussian demo (Proposition 3: w_alpha aligns with the "
               "classifier's normal a), then a VAE explaining a CNN on MNIST 3 vs 8."),
        ("code", INSTALL),
        ("code", '''import jax, jax.numpy as jnp, numpy as np, matplotlib.pyplot as plt
from flax import nnx
from jcausal.gce import ExplainerSettings, LinearGaussian, fit_explainer, information_flow
from jcausal.models import Loop
from jcausal.plot.gce import plot_linear_explanation, plot_training

a = jnp.asarray([1.2, -1.6], jnp.float32)             # the classifier's normal, |a| = 2

def probit(a, x):
    p1 = jax.scipy.stats.norm.cdf(a @ x)
    return jnp.stack([1.0 - p1, p1])

model = LinearGaussian(2, 1, 1, gamma=0.05, unit_columns=True, rngs=nnx.Rngs(0))
res = fit_explainer(model, probit, key=jax.random.key(0), K=1, L=1, lam=0.1, steps=60 if SMALL else 300,
                    classify_params=a, settings=ExplainerSettings(n_alpha=64, n_beta=16, learning_rate=0.05),
                    loop=Loop(progress=False))
W = np.asarray(model.weights)
print("|cos(w_alpha, a)| =", abs(W[:, 0] @ np.asarray(a)) / np.linalg.norm(W[:, 0]) / np.linalg.norm(a))
fig = plot_linear_explanation(W, np.asarray(a), 1); fig.savefig(f"{OUT}/03_linear.png", dpi=100)
fig = plot_training(res.history, lam=0.1); fig.savefig(f"{OUT}/03_linear_training.png", dpi=100)'''),
        ("md", "## MNIST 3 vs 8\n\nThe Table 1 CNN, then the Table 2 VAE explainer with K = 1 causal and "
               "L = 7 noncausal factors; latent sweeps outlined by the predicted class, and the causal "
               "factor swept finely across each decision change (Figure 14). Skipped with a "
               "message when the MNIST IDX files are not in `$JCAUSAL_DATA`."),
        ("code", '''from jcausal.experiments.gce_mnist import GCEMnistConfig, explain_digits, fit_classifier, load_mnist_classes
from jcausal.plot.gce import plot_factor_flow, plot_fine_sweep, plot_sweeps

try:
    digits = load_mnist_classes(os.environ.get("JCAUSAL_DATA", "../../shared/data/mnist"), (3, 8))
except (FileNotFoundError, ValueError) as err:
    digits = None
    print("MNIST not found, skipping:", err)
if digits is not None:
    clf = fit_classifier(digits, key=jax.random.key(0), epochs=1, progress=False)
    # the defaults answer in minutes (GCEMnistConfig.paper() for the authors' settings)
    config = GCEMnistConfig(steps=20, pretrain_steps=10, n_alpha=8, n_beta=4, n_flow=(16, 8)) if SMALL \
        else GCEMnistConfig()
    exp = explain_digits(digits, clf, key=jax.random.key(1), config=config, progress=False)
    fig = plot_factor_flow(exp.flows, exp.K); fig.savefig(f"{OUT}/03_flow.png", dpi=100)
    fig = plot_sweeps(exp.sweep.images, exp.sweep.probs, exp.sweep.offsets, exp.K, sample=0,
                      class_names=["3", "8"])
    fig.savefig(f"{OUT}/03_sweeps.png", dpi=100)
    fig = plot_fine_sweep(exp.fine.images, exp.fine.probs, exp.fine.offsets, K=exp.K, class_names=["3", "8"])
    fig.savefig(f"{OUT}/03_fine_sweep.png", dpi=100)'''),
    ],
    "04_tracer.ipynb": [
        ("md", "# TRACER: causal mechanisms inside a network, and counterfactuals\n\nInterventions on "
               "input patches, CKA between every layer's activations on the original and the intervened "
               "inputs, layer groups as causal nodes with links, signed per-node feature contributions, "
               "the global view, and a counterfactual GAN on a tabular classifier. (ImageNet/ResNet-50 "
               "and CIC-IDS 2017 are not available offline: scikit-learn's 8x8 digits and breast cancer "
               "data stand in.)"),
        ("code", INSTALL),
        ("code", '''import jax, numpy as np, matplotlib.pyplot as plt
from flax import nnx
from jcausal.data import load_digits
from jcausal.models import MLP, AlexNetSmall, Loop, train
from jcausal.tracer import global_view, layer_outputs, trace

d = load_digits()
images = np.asarray(d.X, np.float32).reshape(-1, 8, 8)
net = AlexNetSmall(10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0))
train(net, images.reshape(len(images), -1), d.y, key=jax.random.key(0), epochs=3 if SMALL else 15,
      batch_size=64, learning_rate=1e-3, progress=False)
lo = layer_outputs(net, images[0], layers=["convs.*", "fcs.*"])
ex = trace(lo, images[0], patch=2, stride=2, eps=0.05)
print("nodes:", ex.graph.node_names()); print("links:", ex.graph.links)'''),
        ("code", '''from jcausal.plot.tracer import plot_causal_graph, plot_cka, plot_contributions, plot_coverage

fig = plot_cka(ex.graph); fig.savefig(f"{OUT}/04_cka.png", dpi=100, bbox_inches="tight")
fig = plot_causal_graph(ex.graph); fig.savefig(f"{OUT}/04_graph.png", dpi=100, bbox_inches="tight")
fig = plot_contributions(ex, images[0]); fig.savefig(f"{OUT}/04_contributions.png", dpi=100, bbox_inches="tight")'''),
        ("md", "## Global view: inputs grouped by causal mechanism"),
        ("code", '''gv = global_view(lo, images[:200], d.y[:200], per_class=1 if SMALL else 5, patch=2, progress=False)
fig = plot_coverage(gv); fig.savefig(f"{OUT}/04_coverage.png", dpi=100, bbox_inches="tight")'''),
        ("md", "## A counterfactual on breast cancer data\n\nThe GAN's generator encodes an input, "
               "appends the one-hot target class and decodes a counterfactual, trained against a "
               "discriminator and pulled towards the nearest training instance of the target class."),
        ("code", '''from jcausal.plot.counterfactual import plot_feature_changes
from jcausal.tracer import CounterfactualGAN, counterfactuals, feature_changes, model_labels, nn_index, train_gan
from jcausal.tracer.datasets import load_breast_cancer

bc = load_breast_cancer()
clf = MLP((30, 32, 2), rngs=nnx.Rngs(0))
train(clf, bc.X[:450], bc.y[:450], key=jax.random.key(0), epochs=50, batch_size=32, learning_rate=1e-2,
      progress=False)
y_model, _ = model_labels(clf, bc.X[:450])
index = nn_index(bc.X[:450], y_model, 2)
gan = CounterfactualGAN(2, input_shape=(30,), kind="tabular", latent=8, rngs=nnx.Rngs(0))
train_gan(gan, bc.X[:450], y_model, key=jax.random.key(1), steps=100 if SMALL else 1500, lam=0.9,
          index=index, loop=Loop(log_every=10, progress=False))
pred, _ = model_labels(clf, bc.X[450:460])
r = counterfactuals(gan, clf, bc.X[450:460], 1 - pred, index, x_train=bc.X[:450])
print(r.summary())
changes = feature_changes(r.inputs[0], r.counterfactuals[0], bc.scaler, bc.feature_names, top=8)
fig = plot_feature_changes(changes); fig.savefig(f"{OUT}/04_counterfactual.png", dpi=100, bbox_inches="tight")'''),
    ],
}


def build(names=None):
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["colab"] = {"provenance": []}
        nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    build()
