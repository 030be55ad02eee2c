import jax.numpy as jnp
import matplotlib
import numpy as np

from jcausal.ace import explain
from jcausal.plot import plot_causal_regressors, plot_saliency

matplotlib.use("Agg")


def _result():
    X = np.random.default_rng(0).uniform(size=(80, 3)).astype(np.float32)
    return X, explain(lambda x: jnp.stack([x[0] * x[1], jnp.cos(x[2]), x[1]]), X, num_alphas=8,
                      max_order=3)


def test_regressor_figure_layout(tmp_path):
    _, res = _result()
    fig = plot_causal_regressors(res, feature_names=["a", "b", "c"], output_names=["p", "q", "r"])
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["ACE on p", "ACE on q", "ACE on r"]
    assert all(len(ax.get_lines()) == 3 + 1 for ax in axes)  # one line per feature + zero line
    # the plotted line is the ACE curve: mean - baseline
    x, y = axes[1].get_lines()[2].get_data()
    np.testing.assert_allclose(y, np.asarray(res.ace(np.tile(x, (3, 1))))[2, :, 1], rtol=1e-5, atol=1e-6)
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_saliency_figures():
    X, res = _result()
    sal = res.local_saliency(X[:6])
    fig = plot_saliency(sal, output=1, feature_names=["a", "b", "c"])
    img = fig.get_axes()[0].get_images()[0].get_array()
    np.testing.assert_allclose(img, np.asarray(sal)[..., 1], rtol=1e-6)
    fig = plot_saliency(np.random.default_rng(0).normal(size=(2, 16)), image_shape=(4, 4),
                        positive_only=True)
    assert np.asarray(fig.get_axes()[0].get_images()[0].get_array()).min() >= 0


def test_sequence_figures():
    from jcausal.ace.recurrent import LagTau
    from jcausal.plot import plot_lag_tau, plot_sequence_saliency

    X = np.random.default_rng(0).normal(size=(4, 12))
    ace = X * 0.1
    fig = plot_sequence_saliency(X, ace, -ace)
    assert [a.get_title() for a in fig.get_axes()[:3]] == ["input sequence", "causal attribution (ACE > 0)",
                                                           "Integrated Gradients"]
    np.testing.assert_allclose(fig.get_axes()[1].get_images()[0].get_array(), np.maximum(ace, 0))
    fig = plot_lag_tau(LagTau(jnp.asarray(2.5), jnp.asarray([2, 3, 2, 3]), jnp.zeros((4, 5))), tol=1e-3)
    assert "2.50" in fig.get_axes()[0].get_title()
