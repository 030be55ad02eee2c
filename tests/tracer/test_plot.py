"""Plots draw from results without computing anything (smoke tests on a tiny explanation)."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jcausal.plot.tracer import plot_causal_graph, plot_cka, plot_contributions, plot_coverage
from jcausal.tracer import summarize_mechanisms, trace
from jcausal.tracer.global_ import GlobalView


def test_plots_image_and_vector():
    import matplotlib.pyplot as plt

    m = nnx.Sequential(nnx.Linear(16, 8, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(8, 3, rngs=nnx.Rngs(1)))

    class Img(nnx.Module):
        def __init__(self):
            self.net = m

        def __call__(self, x):
            return self.net(x.reshape(-1))

    x = jnp.asarray(np.random.default_rng(0).random((4, 4)), jnp.float32)
    ex = trace(Img(), x, patch=2, stride=1)
    mechs, assign, by_nodes = summarize_mechanisms([ex.graph, ex.graph], [0, 1])
    gv = GlobalView(mechs, assign, np.arange(2), np.array([0, 1]), None, by_nodes, (ex.graph,) * 2)
    for fig in [plot_cka(ex.graph), plot_causal_graph(ex.graph), plot_contributions(ex, np.asarray(x)),
                plot_coverage(gv)]:
        assert fig.axes
        plt.close(fig)
    exv = trace(m, x.reshape(-1))
    fig = plot_contributions(exv, feature_names=[f"f{i}" for i in range(16)], top_k=5)
    assert len(fig.axes) == exv.graph.num_nodes
    plt.close(fig)
