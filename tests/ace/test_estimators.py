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
    assert "at_mean_plus_test" in " ".join(ace.format_help().split())


def test_unregistered_estimator_is_gone():
    cls = define_at_mean_plus()
    E.unregister_estimator(cls.name)
    assert "at_mean_plus_test" not in E.method_names()
    with pytest.raises(ValueError, match="method"):
        E.make_estimator("at_mean_plus_test")


def test_a_test_only_estimator_runs_in_explain_jobs_and_the_cli(test_estimator, tmp_path, monkeypatch,
                                                                capsys):
    """Writing the class is all it takes: ``explain``, ``run_job`` and ``jcausal ace run --method
    at_mean_plus_test --setting shift=1.0`` (its new setting by name, typed from the class) give the
    same expectations, ``f(mu with x_i = a) + shift``, computed here by hand."""
    import json
    import textwrap

    from jcausal.ace import explain, load_result
    from jcausal.ace.jobs import run_job
    from jcausal.cli import main

    X = np.random.default_rng(0).uniform(size=(40, 3)).astype(np.float32)
    W = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)

    def f(W, x):
        return jnp.tanh(W @ x)

    kw = dict(num_alphas=4, max_order=1)
    res = explain(f, X, params=jnp.asarray(W), method=test_estimator(shift=1.0), **kw)
    stats = input_stats(X)
    want = np.stack([np.stack([np.asarray(f(W, stats.mean.at[i].set(a))) + 1.0 for a in res.alphas[i]])
                     for i in range(3)])
    np.testing.assert_allclose(res.expectations, want, atol=1e-5)
    job = run_job(f, X, tmp_path / "job", params=jnp.asarray(W), method=test_estimator(shift=1.0),
                  progress=False, **kw)
    np.testing.assert_array_equal(job.expectations, res.expectations)

    (tmp_path / "testmodel.py").write_text(textwrap.dedent(f"""
        import jax.numpy as jnp
        def make():
            return (lambda W, x: jnp.tanh(W @ x)), jnp.asarray({W.tolist()!r}, jnp.float32)
    """))
    np.save(tmp_path / "X.npy", X)
    monkeypatch.chdir(tmp_path)
    argv = ["ace", "run", "--model", "testmodel:make", "--data", "X.npy", "--num-alphas", "4", "--max-order",
            "1", "--method", "at_mean_plus_test", "--setting", "shift=1.0", "--quiet"]
    assert main([*argv, "--out", "cli"]) == 0
    np.testing.assert_allclose(load_result(tmp_path / "cli" / "ace.npz").expectations, res.expectations,
                               atol=1e-6)
    assert json.loads((tmp_path / "cli" / "ace.json").read_text())["settings"]["method"]["shift"] == 1.0
    # refused before any work, naming what the class offers
    capsys.readouterr()
    assert main([*argv[:-3], "--setting", "shiftt=1", "--quiet", "--out", "bad"]) == 2
    assert "--setting shiftt: --method at_mean_plus_test has no such setting; its settings are" in \
        capsys.readouterr().err
    assert main([*argv[:-3], "--setting", "shift=big", "--quiet", "--out", "bad"]) == 2
    assert "--setting shift=big: shift is a number (float)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
