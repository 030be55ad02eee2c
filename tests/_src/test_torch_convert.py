"""PyTorch modules converted through torch.export: outputs and gradients against torch itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import jcausal  # noqa: E402


def _seeded(module, seed=0):
    torch.manual_seed(seed)
    for p in module.parameters():
        with torch.no_grad():
            p.copy_(torch.randn_like(p) * 0.3)
    return module


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.GELU(), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 2 * 2, 16), nn.LayerNorm(16), nn.Tanh(),
                                  nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.features(x))


def _cnn():
    m = _seeded(CNN())
    bn = m.features[1]
    bn.running_mean.copy_(torch.linspace(-0.5, 0.5, 4))
    bn.running_var.copy_(torch.linspace(0.5, 2.0, 4))
    return m


def test_cnn_outputs_and_gradients_equal_torch_on_100_inputs():
    m = _cnn().train()  # converted in eval mode; the module's own flag is restored
    X = np.random.default_rng(0).normal(size=(100, 1, 12, 12)).astype(np.float32)
    w = jcausal.wrap(m, X[0])
    assert m.training
    m.eval()
    ref = m(torch.from_numpy(X)).detach().numpy()
    got = np.asarray(jax.vmap(w)(X))
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # gradient of one logit with respect to the input, through the converted graph and through torch
    xt = torch.from_numpy(X[:10]).requires_grad_(True)
    m(xt)[:, 1].sum().backward()
    g = jax.vmap(jax.grad(lambda x: w(x)[1]))(X[:10])
    np.testing.assert_allclose(np.asarray(g), xt.grad.numpy(), atol=1e-4, rtol=0)
    assert w.split is not None and w.output == "raw"


class Zoo(nn.Module):
    """Every other supported operation once: Conv1d, SiLU, Sigmoid, Softplus, adaptive pooling with a
    non-divisible size, cat, mul, matmul, permute, LogSoftmax."""

    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(2, 3, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((2, 3))
        self.lin = nn.Linear(6, 4)
        self.act = nn.SiLU()
        self.out = nn.LogSoftmax(dim=-1)

    def forward(self, x):  # x: (N, 2, 10)
        a = self.act(self.conv1d(x))                      # (N, 3, 5)
        b = self.pool(a[:, None])                         # (N, 1, 2, 3)
        c = torch.cat([b.flatten(1), torch.sigmoid(b).reshape(x.shape[0], -1)], dim=1)  # (N, 12)
        d = nn.functional.softplus(c[:, :6]) * c[:, 6:]   # (N, 6)
        e = self.lin(d).permute(1, 0)                     # (4, N)
        return self.out((e.T @ torch.ones(4, 4)) + e.T)


def test_other_operations_equal_torch():
    m = _seeded(Zoo(), seed=1).eval()
    X = np.random.default_rng(1).normal(size=(20, 2, 10)).astype(np.float32)
    w = jcausal.wrap(m, X[0])
    np.testing.assert_allclose(np.asarray(jax.vmap(w)(X)), m(torch.from_numpy(X)).detach().numpy(), atol=1e-5)


def test_embedding_takes_integer_inputs():
    m = _seeded(nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2), nn.Softmax(-1))).eval()
    idx = np.array([3, 0, 9], np.int32)
    w = jcausal.wrap(m, idx)
    ref = m(torch.from_numpy(idx[None]).long()).detach().numpy()[0]
    np.testing.assert_allclose(np.asarray(w(idx)), ref, atol=1e-6)
    assert w.output == "probabilities" and w.split is None  # no affine map of an index


def test_unsupported_operation_is_named_with_its_module_path():
    class Cum(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=-1)

    m = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), Cum()))
    with pytest.raises(ValueError, match=r"'cumsum'.*module '1\.1'"):
        jcausal.wrap(m, np.zeros(4, np.float32))


def test_data_dependent_control_flow_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(ValueError, match="data-dependent control flow"):
        jcausal.wrap(Branchy(), np.ones(4, np.float32))


def test_example_the_module_rejects_names_both_shapes():
    m = nn.Sequential(nn.Linear(6, 3))
    with pytest.raises(ValueError, match=r"shape \(5,\).*takes 6 features"):
        jcausal.wrap(m, np.zeros(5, np.float32))


def test_converted_function_is_pure_in_params():
    m = _seeded(nn.Sequential(nn.Linear(3, 2))).eval()
    x = np.ones(3, np.float32)
    w = jcausal.wrap(m, x)
    doubled = jax.tree.map(lambda a: 2 * a, w.params)
    ref = 2 * m(torch.from_numpy(x[None])).detach().numpy()[0]
    np.testing.assert_allclose(np.asarray(jax.jit(w.apply)(doubled, x)), ref, atol=1e-6)
    assert set(w.params) == {"0.weight", "0.bias"} and isinstance(w.params["0.weight"], jnp.ndarray)
