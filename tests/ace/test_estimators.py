"""A new estimator is one class: registered by a decorator, it is a ``method=`` of the driver (as an
object and by name) and a ``--method`` choice of the CLI, with neither touched."""


import jax.numpy as jnp
import numpy as np
import pytest

from jcausal.ace import estimators as E
from jcausal.ace import input_stats, interventional_expectation
from tests.ace.estimator_for_tests import define_at_mean_plus


@pytest.fixture
def test_estimator():
    cls = define_at_mean_plus()
    yield cls
    E.unregister_estimator(cls.name)
    assert cls.name not in E.REGISTRY


def test_a_test_only_estimator_is_a_method_and_a_cli_choice(test_estimator):
    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    stats = input_stats(X)
    W = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3)), jnp.float32)

    def f(W, x):
        return jnp.tanh(W @ x)

    alphas = np.array([-1.0, 0.0, 0.5], np.float32)
    want = np.stack([np.stack([np.asarray(f(W, stats.mean.at[i].set(a))) + 0.25 for a in alphas])
                     for i in range(3)])
    by_obj = interventional_expectation(f, stats, alphas, params=W, method=test_estimator())
    by_name = interventional_expectation(f, stats, alphas, params=W, method="at_mean_plus_test")
    np.testing.assert_allclose(by_obj, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(by_name, by_obj)
    shifted = interventional_expectation(f, stats, alphas, params=W, method=test_estimator(shift=1.0))
    np.testing.assert_allclose(np.asarray(shifted) - np.asarray(by_obj), 0.75, atol=1e-6)
    # the CLI's parser, built in this process, offers it
    from jcausal.cli import build_parser

    ace = build_parser()._subparsers._group_actions[0].choices["ace"]
    method = next(a for a in ace._actions if "--method" in a.option_strings)
    assert "at_mean_plus_test" in method.choices
    assert "at_mean_plus_test" in ace.format_help()


def test_unregistered_estimator_is_gone():
    cls = define_at_mean_plus()
    E.unregister_estimator(cls.name)
    assert "at_mean_plus_test" not in E.method_names()
    with pytest.raises(ValueError, match="method"):
        E.make_estimator("at_mean_plus_test")
