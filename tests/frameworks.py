"""The same small networks in every framework jcausal.wrap takes (Flax NNX and Linen, Equinox, Keras 3
on JAX, PyTorch), each with the network written by hand as ``f(params, x)`` from the framework's
weights: an independent reference (jax.numpy and lax only, no framework code)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from functools import partial  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import linen, nnx  # noqa: E402

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


def set_mlp_weights(fw: str, model, kw: dict, P: dict):
    """``(model, kw)`` of :func:`build`'s ``fw`` MLP holding the weights ``P`` (``mlp_ref``'s: ``W1``
    ``(K_MLP, HID)``, ``b1``, ``W2`` ``(HID, OUT)``, ``b2``), so that every framework computes the
    same trained function."""
    W1, b1, W2, b2 = (np.asarray(P[k], np.float32) for k in ("W1", "b1", "W2", "b2"))
    if fw == "nnx":
        model.fc1.kernel.value, model.fc1.bias.value = jnp.asarray(W1), jnp.asarray(b1)
        model.fc2.kernel.value, model.fc2.bias.value = jnp.asarray(W2), jnp.asarray(b2)
        return model, kw
    if fw == "linen":
        v = {"params": {"Dense_0": {"kernel": jnp.asarray(W1), "bias": jnp.asarray(b1)},
                        "Dense_1": {"kernel": jnp.asarray(W2), "bias": jnp.asarray(b2)}}}
        return model, {**kw, "params": v}
    if fw == "equinox":
        model = eqx.tree_at(lambda m: (m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias), model,
                            (jnp.asarray(W1.T), jnp.asarray(b1), jnp.asarray(W2.T), jnp.asarray(b2)))
        return model, kw
    if fw == "keras":
        model.set_weights([W1, b1, W2, b2])
        return model, kw
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(W1.T.copy()))
        model[0].bias.copy_(torch.from_numpy(b1))
        model[2].weight.copy_(torch.from_numpy(W2.T.copy()))
        model[2].bias.copy_(torch.from_numpy(b2))
    return model, kw
