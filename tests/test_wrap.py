"""jcausal.wrap: one model contract for Flax NNX and Linen, Equinox, Keras (JAX) and PyTorch.

Every wrapped model is compared with the same network written by hand as ``f(params, x)`` from the
framework's weights (an independent reference: jax.numpy and lax only, no framework code).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import warnings  # noqa: E402
from functools import partial  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import linen, nnx  # noqa: E402

import jcausal  # noqa: E402
from jcausal._src.calling import unwrap_model  # noqa: E402
from jcausal.ace import explain, input_stats, interventional_expectation  # noqa: E402
from jcausal.gce import information_flow  # noqa: E402
from jcausal.tracer import layer_outputs  # noqa: E402

eqx = pytest.importorskip("equinox")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

K_MLP, HID, OUT, SIDE, CH = 6, 8, 3, 6, 4  # MLP: 6 -> 8 -> 3; CNN: 6x6x1 -> conv3x3 (4) -> 3
FLAT = (SIDE - 2) * (SIDE - 2) * CH


# ---- the reference: the networks written by hand --------------------------------------------------


def mlp_ref(p, x):
    return jnp.maximum(x.reshape(-1) @ p["W1"] + p["b1"], 0.0) @ p["W2"] + p["b2"]


def cnn_ref(p, x, layout):
    """conv 3x3 VALID + bias, ReLU, flatten (in the framework's order), dense."""
    if layout == "hwc":
        img = x.reshape(SIDE, SIDE, 1)[None]
        y = jax.lax.conv_general_dilated(
            img, p["K"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    else:
        img = x.reshape(1, SIDE, SIDE)[None]
        y = jax.lax.conv_general_dilated(
            img, p["K"], (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
    bias = p["c"].reshape((1, 1, 1, CH) if layout == "hwc" else (1, CH, 1, 1))
    return jnp.maximum(y + bias, 0.0)[0].reshape(-1) @ p["W2"] + p["b2"]


def np32(a):
    return jnp.asarray(np.asarray(a), jnp.float32)


# ---- the same networks in each framework ----------------------------------------------------------


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.fc1, self.fc2 = nnx.Linear(K_MLP, HID, rngs=rngs), nnx.Linear(HID, OUT, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.fc1(x)))


class NnxCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, CH, (3, 3), padding="VALID", rngs=rngs)
        self.fc = nnx.Linear(FLAT, OUT, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x, *, deterministic):  # a required keyword bound by wrap(..., deterministic=True)
        return self.fc(self.drop(nnx.relu(self.conv(x)).reshape(-1), deterministic=deterministic))


class LinenMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        h = linen.Dense(HID)(x)  # named Dense_0: Linen numbers modules as they are built
        return linen.Dense(OUT)(linen.relu(h))


class LinenCNN(linen.Module):
    @linen.compact
    def __call__(self, x):
        h = linen.Conv(CH, (3, 3), padding="VALID")(x)
        return linen.Dense(OUT)(linen.relu(h).reshape(-1))


class EqxMLP(eqx.Module):
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.fc1, self.fc2 = eqx.nn.Linear(K_MLP, HID, key=k1), eqx.nn.Linear(HID, OUT, key=k2)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.fc1(x)))


class EqxCNN(eqx.Module):
    conv: eqx.nn.Conv2d
    fc: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv, self.fc = eqx.nn.Conv2d(1, CH, 3, key=k1), eqx.nn.Linear(FLAT, OUT, key=k2)

    def __call__(self, x):
        return self.fc(jax.nn.relu(self.conv(x)).reshape(-1))


class TorchCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act = torch.nn.Conv2d(1, CH, 3), torch.nn.ReLU()
        self.flat, self.fc = torch.nn.Flatten(), torch.nn.Linear(FLAT, OUT)

    def forward(self, x):
        return self.fc(self.flat(self.act(self.conv(x))))


def keras_mlp():
    return keras.Sequential(
        [
            keras.Input((K_MLP,)),
            keras.layers.Dense(HID, activation="relu", name="hidden"),
            keras.layers.Dense(OUT, name="logits"),
        ]
    )


def keras_cnn():
    return keras.Sequential(
        [
            keras.Input((SIDE, SIDE, 1)),
            keras.layers.Conv2D(CH, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(OUT, name="logits"),
        ]
    )


def build(fw: str, arch: str):
    """``(model, example, wrap kwargs, reference f(params, x), reference params, layer names)``."""
    rng = np.random.default_rng(0)
    ex = rng.normal(size=(K_MLP,) if arch == "mlp" else (SIDE, SIDE, 1)).astype(np.float32)
    chw = ex.reshape(1, SIDE, SIDE) if arch == "cnn" else ex
    ref_cnn_hwc, ref_cnn_chw = partial(cnn_ref, layout="hwc"), partial(cnn_ref, layout="chw")
    if fw == "nnx":
        m = NnxMLP(nnx.Rngs(0)) if arch == "mlp" else NnxCNN(nnx.Rngs(0))
        if arch == "mlp":
            P = dict(W1=m.fc1.kernel[...], b1=m.fc1.bias[...], W2=m.fc2.kernel[...], b2=m.fc2.bias[...])
            return m, ex, {}, mlp_ref, P, ("fc1", "fc2")
        P = dict(K=m.conv.kernel[...], c=m.conv.bias[...], W2=m.fc.kernel[...], b2=m.fc.bias[...])
        return m, ex, {"deterministic": True}, ref_cnn_hwc, P, ("conv", "drop", "fc")
    if fw == "linen":
        m = LinenMLP() if arch == "mlp" else LinenCNN()
        v = m.init(jax.random.key(0), ex)
        q = v["params"]
        if arch == "mlp":
            P = dict(
                W1=q["Dense_0"]["kernel"],
                b1=q["Dense_0"]["bias"],
                W2=q["Dense_1"]["kernel"],
                b2=q["Dense_1"]["bias"],
            )
            return m, ex, {"params": v}, mlp_ref, P, ("Dense_0", "Dense_1")
        P = dict(
            K=q["Conv_0"]["kernel"], c=q["Conv_0"]["bias"], W2=q["Dense_0"]["kernel"], b2=q["Dense_0"]["bias"]
        )
        return m, ex, {"params": v}, ref_cnn_hwc, P, ("Conv_0", "Dense_0")
    if fw == "equinox":
        m = EqxMLP(jax.random.key(0)) if arch == "mlp" else EqxCNN(jax.random.key(0))
        if arch == "mlp":
            P = dict(W1=m.fc1.weight.T, b1=m.fc1.bias, W2=m.fc2.weight.T, b2=m.fc2.bias)
            return m, ex, {}, mlp_ref, P, ("fc1", "fc2")
        P = dict(K=m.conv.weight, c=m.conv.bias.reshape(-1), W2=m.fc.weight.T, b2=m.fc.bias)
        return m, chw, {}, ref_cnn_chw, P, ("conv", "fc")
    if fw == "keras":
        keras.utils.set_random_seed(0)
        m = keras_mlp() if arch == "mlp" else keras_cnn()
        w = [np32(v) for v in m.get_weights()]
        if arch == "mlp":
            return m, ex, {}, mlp_ref, dict(W1=w[0], b1=w[1], W2=w[2], b2=w[3]), ("hidden", "logits")
        return m, ex, {}, ref_cnn_hwc, dict(K=w[0], c=w[1], W2=w[2], b2=w[3]), ("conv", "flat", "logits")
    torch.manual_seed(0)
    if arch == "mlp":
        m = torch.nn.Sequential(torch.nn.Linear(K_MLP, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))
        P = dict(
            W1=np32(m[0].weight.detach()).T,
            b1=np32(m[0].bias.detach()),
            W2=np32(m[2].weight.detach()).T,
            b2=np32(m[2].bias.detach()),
        )
        return m, ex, {}, mlp_ref, P, ("0", "1", "2")
    m = TorchCNN()
    P = dict(
        K=np32(m.conv.weight.detach()),
        c=np32(m.conv.bias.detach()),
        W2=np32(m.fc.weight.detach()).T,
        b2=np32(m.fc.bias.detach()),
    )
    return m, chw, {}, ref_cnn_chw, P, ("conv", "act", "flat", "fc")


FRAMEWORKS = ("nnx", "linen", "equinox", "keras", "torch")
CASES = [(fw, arch) for fw in FRAMEWORKS for arch in ("mlp", "cnn")]


def data(example, n=40, seed=1):
    k = int(np.prod(example.shape))
    return np.random.default_rng(seed).normal(size=(n, k)).astype(np.float32)


@pytest.mark.parametrize("fw,arch", CASES)
def test_ace_equals_the_hand_written_network(fw, arch):
    model, ex, kw, ref, P, names = build(fw, arch)
    w = jcausal.wrap(model, ex, **kw)
    X = data(ex)
    stats, feats, alphas = (
        input_stats(X),
        [0, X.shape[1] // 2, X.shape[1] - 1],
        jnp.asarray([-1.0, -0.2, 0.5, 1.5]),
    )
    np.testing.assert_allclose(
        np.asarray(jax.vmap(w)(X)), np.asarray(jax.vmap(partial(ref, P))(X)), atol=1e-5
    )
    assert w.split is not None, f"no split found for the {fw} {arch}"
    # explain runs interventional_expectation on the wrapped model's automatic split; the reference is
    # plain eqn 2 (every row, feature and alpha through the whole hand-written network)
    r_w = explain(w, X, features=feats, alphas=alphas, max_order=2)
    E_w = interventional_expectation(w, stats, alphas, features=feats, data=X)
    E_ref = interventional_expectation(ref, stats, alphas, params=P, features=feats, data=X)
    np.testing.assert_allclose(np.asarray(E_w), np.asarray(E_ref), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(r_w.expectations), np.asarray(E_ref), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fw,arch", CASES)
def test_layer_outputs_named_as_the_framework_names_them(fw, arch):
    model, ex, kw, ref, P, names = build(fw, arch)
    w = jcausal.wrap(model, ex, **kw)
    lo = layer_outputs(w, ex)
    assert lo.names == names
    x = data(ex)[0]
    out, vals = jax.jit(lo.apply)(lo.params, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref(P, x)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(vals[-1]), np.asarray(ref(P, x)), atol=1e-5)  # the output layer
    assert tuple(v.shape for v in vals) == lo.shapes
    only = layer_outputs(w, ex, layers=[names[0]])
    assert only.names == (names[0],)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_information_flow_takes_the_wrapped_classifier(fw):
    model, ex, kw, ref, P, _ = build(fw, "mlp")
    w = jcausal.wrap(model, ex, head=jax.nn.softmax, **kw)
    assert w.output == "probabilities"
    D = jnp.asarray(np.random.default_rng(2).normal(size=(2, K_MLP)), jnp.float32)

    def decode(d, z):
        return 3.0 * jnp.tanh(z @ d)

    key = jax.random.key(0)
    got = information_flow(decode, w, key, K=1, L=1, n_alpha=8, n_beta=8, params=(D, None))
    want = information_flow(
        decode, lambda p, x: jax.nn.softmax(ref(p, x)), key, K=1, L=1, n_alpha=8, n_beta=8, params=(D, P)
    )
    assert float(want) > 1e-3
    np.testing.assert_allclose(float(got), float(want), atol=1e-5)


def test_output_kind_detected_or_given():
    model, ex, _, ref, P, _ = build("torch", "mlp")
    assert jcausal.wrap(model, ex).output == "raw"
    assert jcausal.wrap(torch.nn.Sequential(model, torch.nn.Softmax(-1)), ex).output == "probabilities"
    assert jcausal.wrap(model, ex, output="probabilities").output == "probabilities"
    with pytest.raises(ValueError, match="output must be one of"):
        jcausal.wrap(model, ex, output="logits")


def test_plain_functions_closed_over_arrays_become_params():
    W = jnp.asarray(np.random.default_rng(3).normal(size=(K_MLP, OUT)), jnp.float32)
    x = data(np.zeros(K_MLP))[0]
    w = jcausal.wrap(lambda x: jnp.tanh(x @ W + 1.0), x)
    assert len(w.params) == 1 and w.params[0].shape == W.shape and w.split is not None
    np.testing.assert_allclose(np.asarray(w(x)), np.asarray(jnp.tanh(x @ W + 1.0)), atol=1e-6)
    w2 = jcausal.wrap(lambda p, x: p["W"].T @ x, x, params={"W": W})
    np.testing.assert_allclose(np.asarray(w2(x)), np.asarray(W.T @ x), atol=1e-6)


def _ie(w, X):
    return np.asarray(
        interventional_expectation(w, input_stats(X), jnp.asarray([-0.5, 0.5]), features=[0, 1], data=X)
    )


def test_training_after_wrapping_is_seen_by_the_next_call_and_wrap():
    """The wrapped object reads its model at every call (issue 21, item 2; issue 22): trained after
    wrapping, the SAME wrapped object gives the new answer, equal to a fresh wrap's."""
    X = data(np.zeros(K_MLP))
    y = np.arange(X.shape[0]) % OUT
    # NNX: one gradient step on the module
    m, ex, _, ref, _, _ = build("nnx", "mlp")
    w = jcausal.wrap(m, ex)
    before = _ie(w, X)
    graphdef, state = nnx.split(m)

    def loss(s):
        logits = jax.vmap(nnx.merge(graphdef, s))(jnp.asarray(X))
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(y)[:, None], axis=1))

    nnx.update(m, jax.tree.map(lambda p, g: p - 1.0 * g, state, jax.grad(loss)(state)))
    after = _ie(w, X)
    np.testing.assert_array_equal(after, _ie(jcausal.wrap(m, ex), X))
    P = dict(W1=m.fc1.kernel[...], b1=m.fc1.bias[...], W2=m.fc2.kernel[...], b2=m.fc2.bias[...])
    want = np.asarray(
        interventional_expectation(
            ref, input_stats(X), jnp.asarray([-0.5, 0.5]), params=P, features=[0, 1], data=X
        )
    )
    assert np.max(np.abs(after - before)) > 1e-3
    np.testing.assert_allclose(after, want, atol=1e-5)
    # torch: one SGD step
    m, ex, _, _, _, _ = build("torch", "mlp")
    w = jcausal.wrap(m, ex)
    before = _ie(w, X)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    torch.nn.functional.cross_entropy(m(torch.from_numpy(X)), torch.from_numpy(y)).backward()
    opt.step()
    after = _ie(w, X)
    np.testing.assert_array_equal(after, _ie(jcausal.wrap(m, ex), X))
    X0 = X.copy()
    X0[:, 0] = -0.5  # eqn 2 at (feature 0, alpha -0.5), computed by the trained torch module itself
    np.testing.assert_allclose(after[0, 0], m(torch.from_numpy(X0)).detach().numpy().mean(0), atol=1e-5)
    assert np.max(np.abs(after - before)) > 1e-3
    # Keras: one epoch of fit
    m, ex, _, _, _, _ = build("keras", "mlp")
    w = jcausal.wrap(m, ex)
    before = _ie(w, X)
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        m.compile(optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy")
        m.fit(X, y, epochs=1, batch_size=X.shape[0], verbose=0)
        ref0 = np.asarray(m.predict(X0, verbose=0)).mean(0)
    after = _ie(w, X)
    np.testing.assert_array_equal(after, _ie(jcausal.wrap(m, ex), X))
    assert np.max(np.abs(after - before)) > 1e-3
    np.testing.assert_allclose(after[0, 0], ref0, atol=1e-5)
    # a plain function's closed-over arrays: read again at every call
    W = jnp.asarray(np.random.default_rng(5).normal(size=(K_MLP, OUT)), jnp.float32)
    w = jcausal.wrap(lambda x: jax.nn.softmax(x @ W), jnp.asarray(X[0]))
    before = _ie(w, X)
    W = 3.0 * W
    np.testing.assert_allclose(_ie(w, X), _ie(lambda x: jax.nn.softmax(x @ W), X), atol=1e-6)
    assert np.max(np.abs(_ie(w, X) - before)) > 1e-3


# ---- bad inputs ---------------------------------------------------------------------------------


def test_refuses_what_it_cannot_wrap():
    with pytest.raises(TypeError, match="accepts a flax.nnx.Module.*torch.nn.Module"):
        jcausal.wrap(object(), np.zeros(3, np.float32))


def test_example_the_model_rejects_names_both_shapes():
    m = nnx.Linear(K_MLP, OUT, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"rejects an example of shape \(5,\).*\(6, ?3\)|\(5,\).*6"):
        jcausal.wrap(m, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"shape \(5,\); it expects inputs of shape \(None, 6\)"):
        jcausal.wrap(keras_mlp(), np.zeros(5, np.float32))


def test_output_must_be_one_array():
    with pytest.raises(TypeError, match="one array"):
        jcausal.wrap(lambda x: (x, 2 * x), np.zeros(3, np.float32))

    class Two(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.fc(x), x

    with pytest.raises(TypeError, match="returned tuple of 2 arrays"):
        jcausal.wrap(Two(), np.zeros(3, np.float32))
    w = jcausal.wrap(Two(), np.zeros(3, np.float32), head=lambda out: out[0])  # a head selects one
    assert w(np.ones(3, np.float32)).shape == (2,)


def test_call_arguments_bound_by_keyword_or_refused_by_name():
    m, ex, _, _, _, _ = build("nnx", "cnn")
    with pytest.raises(TypeError, match=r"required argument\(s\) \['deterministic'\]"):
        jcausal.wrap(m, ex)
    with pytest.raises(TypeError, match=r"takes no argument\(s\) \['train'\]"):
        jcausal.wrap(m, ex, deterministic=True, train=False)


def test_linen_needs_its_variables():
    with pytest.raises(ValueError, match="needs its variables"):
        jcausal.wrap(LinenMLP(), np.zeros(K_MLP, np.float32))


def test_keras_on_another_backend_says_how_to_switch(monkeypatch):
    m = keras_mlp()
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax before importing keras"):
        jcausal.wrap(m, np.zeros(K_MLP, np.float32))


def test_unwrap_model_refuses_a_second_params_and_passes_others_through():
    w = jcausal.wrap(build("nnx", "mlp")[0], np.zeros(K_MLP, np.float32))
    with pytest.raises(ValueError, match="carries its parameters"):
        unwrap_model(w, {"other": 1})
    # w.params is read afresh from the module at each access: a new tree of the same arrays
    got = unwrap_model(w, w.params)[1]
    assert all(a is b for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(w.params), strict=True))
    f = lambda x: x  # noqa: E731
    assert unwrap_model(f, None) == (f, None)


def test_no_affine_prefix_means_no_split_and_one_warning():
    w = jcausal.wrap(lambda x: jnp.sin(x) * 2.0, np.zeros(3, np.float32))
    assert w.split is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert unwrap_model(w, None, split=False) == (w.apply, w.params)  # whole-model callers: no warning
    with pytest.warns(UserWarning, match="no affine first layer"):
        w.__jcausal_model__()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w.__jcausal_model__()  # said once
