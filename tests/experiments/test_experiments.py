"""The experiments package: fast checks of what the slow runs build on."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jcausal.experiments.gce_mnist import GCEMnistConfig
from jcausal.experiments.tracer_compression import SpecNet, alexnet_spec, compress_spec
from tests.conftest import REPO


def test_the_package_imports_nothing():
    code = ("import sys, jcausal.experiments; "
            "print(sorted(m for m in sys.modules if m.startswith('jcausal.experiments.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_gce_mnist_paper_settings_are_one_call_away():
    c = GCEMnistConfig.paper()
    assert (c.K, c.L, c.lam, c.steps, c.batch_size, c.n_alpha, c.n_beta, c.learning_rate) == \
        (1, 7, 0.05, 8000, 64, 100, 25, 5e-4)
    assert c.pretrain_steps == 0 and c.likelihood == "sse" and c.sampler == "mc" and c.init_log_var == 0.0
    assert GCEMnistConfig.paper(steps=10).steps == 10
    d = GCEMnistConfig()  # the defaults differ only where measured to answer sooner
    assert (d.K, d.L, d.lam, d.batch_size) == (c.K, c.L, c.lam, c.batch_size) and d.sampler == "sobol"


def test_compressed_alexnet_keeps_the_last_layer_of_each_group_and_its_width():
    spec = alexnet_spec()
    groups = [["convs.0", "convs.1"], ["convs.2", "convs.3", "convs.4"], ["fcs.0", "fcs.1", "fcs.2"]]
    small = compress_spec(spec, groups)
    assert small.convs == ((64, 3, 2), (64, 3, 1)) and small.dense == ()
    x = jnp.zeros((28, 28, 1), jnp.float32)
    full, comp = SpecNet(spec, rngs=nnx.Rngs(0)), SpecNet(small, rngs=nnx.Rngs(0))
    assert comp(x).shape == full(x).shape == (10,)
    assert comp.fcs[0].in_features == full.fcs[0].in_features  # pooling moved, flattened width kept
    assert jax.tree.leaves(nnx.state(comp, nnx.Param))


def test_fine_sweep_rows_that_cross_the_decision_come_first():
    from jcausal.experiments.gce_mnist import _crossing
    from jcausal.gce import FineSweep

    p = np.zeros((4, 3, 2))
    p[:, :, 0] = 1.0
    p[1, 2] = p[3, 1:] = [0.0, 1.0]  # rows 1 and 3 change class inside their window
    fs = FineSweep(np.arange(4)[:, None] * np.ones((4, 3)), p, np.zeros((4, 3)), 0)
    out = _crossing(fs, 3)
    assert out.images[:, 0].tolist() == [1, 3, 0] and out.probs.shape == (3, 3, 2)
