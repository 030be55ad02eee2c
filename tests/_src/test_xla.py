"""jcausal._src.xla.jit: jax.jit with the XLA:CPU options jcausal relies on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal._src import xla
from jcausal._src.xla import cpu_compiler_options, jit


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_jit_forms_match_jax_jit():
    x = jax.random.normal(jax.random.key(0), (4, 10, 10, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
    ref = jax.jit(_conv)(x, w)

    @jit
    def a(x, w):
        return _conv(x, w)

    @jit(static_argnames=("scale",))
    def b(x, w, scale):
        return scale * _conv(x, w)

    np.testing.assert_allclose(a(x, w), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b(x, w, scale=2.0), 2 * ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jit(_conv)(x, w), ref, rtol=1e-5, atol=1e-5)
    assert a.eval_shape(x, w).shape == (4, 8, 8, 5)  # attributes reach the underlying jax.jit
    assert "convolution" in a.lower(x, w).compile().as_text()
    assert a.__name__ == "a" and a.__wrapped__ is not None


def test_conv_is_not_an_individual_ynn_fusion():
    opts = cpu_compiler_options()
    if opts is None:
        pytest.skip("this jaxlib has no ynn fusion option (nothing to apply)")
    x = jnp.zeros((2, 10, 10, 3))
    w = jnp.zeros((3, 3, 3, 5))
    text = jit(_conv).lower(x, w).compile().as_text()
    entry = text[text.index("ENTRY"):]
    assert "__ynn_fusion" not in entry  # XLA's own convolution (5x faster here)


def test_user_xla_flags_win(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
    xla.cpu_compiler_options.cache_clear()
    try:
        assert cpu_compiler_options() is None
        monkeypatch.delenv("XLA_FLAGS")
        monkeypatch.setenv("JCAUSAL_XLA_DEFAULTS", "1")
        xla.cpu_compiler_options.cache_clear()
        assert cpu_compiler_options() is None
    finally:
        monkeypatch.undo()
        xla.cpu_compiler_options.cache_clear()


def test_nested_inside_another_jit():
    inner = jit(lambda x: jnp.sin(x) * 2)

    @jax.jit
    def outer(x):
        return inner(x) + 1

    @jit
    def outer2(x):
        return inner(x) + 1

    x = jnp.linspace(0, 1, 5)
    np.testing.assert_allclose(outer(x), jnp.sin(x) * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(outer2(x), jnp.sin(x) * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda x: inner(x).sum())(x), 2 * jnp.cos(x), rtol=1e-6)
