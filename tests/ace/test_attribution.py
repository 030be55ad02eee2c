import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.ace import explain, load_result, save_result
from jcausal.data import load_iris, train_test_split
from jcausal.models import MLP, functional, train


def _spearman(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_feature_the_model_ignores_has_zero_ace_everywhere():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    W = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32).at[:, 2].set(0.0)  # x_2 is never used

    def f(W, x):
        return jnp.tanh(W @ x) ** 2

    res = explain(f, X, params=W, num_alphas=12, max_order=4)
    assert np.all(np.asarray(res.orders)[2] == 0)
    ace = np.asarray(res.ace(np.linspace(-3, 3, 9)))
    assert np.all(ace[2] == 0.0)
    assert np.abs(ace[[0, 1, 3]]).max() > 1e-3  # the others do have an effect


def test_local_saliency_is_ace_at_own_values_and_result_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(100, 3)).astype(np.float32)

    def f(x):
        return jnp.stack([x[0] ** 2 + x[1], jnp.sin(3 * x[2])])

    res = explain(f, X, num_alphas=10, max_order=4, features=[0, 2])
    sal = res.local_saliency(X[:5])
    assert sal.shape == (5, 2, 2)
    own = res.ace(np.stack([X[:5, 0], X[:5, 2]]))  # (F, 5, m) at each input's own values
    np.testing.assert_allclose(sal, np.transpose(np.asarray(own), (1, 0, 2)), rtol=1e-6)
    assert np.abs(np.asarray(sal)).max() > 0.01
    save_result(tmp_path / "r.npz", res)
    back = load_result(tmp_path / "r.npz")
    for a, b in zip(jax.tree.leaves(res), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not an ACE result"):
        np.savez(tmp_path / "bad.npz", a=np.zeros(2))
        load_result(tmp_path / "bad.npz")


def _iris_model(seed=0):
    d = load_iris()
    tr, _ = train_test_split(150, test_size=30, seed=seed)
    model = MLP((4, 8, 3), rngs=nnx.Rngs(seed))
    train(model, d.X[tr], d.y[tr], key=jax.random.key(seed), epochs=300, batch_size=16,
          learning_rate=1e-2, progress=False)
    return d, tr, functional(model)


def test_iris_petal_effects_match_the_paper():
    """ACE paper section 5.1: small petal length/width favour setosa, large ones virginica."""
    d, tr, (apply, params) = _iris_model(0)

    def probs(p, x):
        return jax.nn.softmax(apply(p, x))

    res = explain(probs, d.X[tr], params=params, num_alphas=20, max_order=5, method="monte_carlo",
                  data=d.X[tr])
    a = np.asarray(res.alphas)
    ace = np.asarray(res.ace())
    for feat in (2, 3):  # petal length, petal width
        setosa, virginica = ace[feat, :, 0], ace[feat, :, 2]
        assert _spearman(a[feat], setosa) <= -0.8 and setosa[0] > 0 and setosa[0] > setosa[-1]
        assert _spearman(a[feat], virginica) >= 0.8 and virginica[-1] > 0 and virginica[-1] > virginica[0]


def test_reliability_boundary_checks(tmp_path):
    """Issue 15 items 2, 5 and 10: wrong widths, out-of-range indices, NaN baselines and files that
    are not results are refused with a clear message instead of silently clamped or unpickled."""
    from jcausal.ace import input_stats, intervention_grid

    rng = np.random.default_rng(2)
    X = rng.uniform(size=(80, 4)).astype(np.float32)

    def f(x):
        return jnp.stack([x[0] * x[2], jnp.sin(3 * x[3])])

    res = explain(f, X, num_alphas=8, max_order=3)
    assert res.stderr is not None and res.stderr.shape == (4, 8, 2)  # eqn 2 by default
    assert int(res.input_dim) == 4
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        res.local_saliency(X[:, [2, 3]])
    stats = input_stats(X)
    with pytest.raises(ValueError, match="out of range"):
        intervention_grid(stats, 3, [7])
    with pytest.raises(ValueError, match="reference_at"):
        explain(f, X, num_alphas=8, max_order=3, reference_at=np.nan)
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an ACE result"):
        load_result(tmp_path / "x.npy")
    (tmp_path / "junk.npz").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="not an ACE result"):
        load_result(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_result(tmp_path / "missing.npz")
    # a result passes through jit as a pytree
    out = jax.jit(lambda r: r.expectations.sum())(res)
    np.testing.assert_allclose(out, np.asarray(res.expectations).sum(), rtol=1e-5)


def test_an_estimator_setting_given_to_explain_says_where_it_belongs():
    """The hint lists what belongs to an estimator or to Execution, derived from the registered
    classes: a test estimator's new setting is known as soon as its class is registered."""
    from jcausal.ace import estimators as E
    from tests.ace.estimator_for_tests import NAME, define_at_mean_plus

    X = np.random.default_rng(0).uniform(size=(20, 2)).astype(np.float32)
    with pytest.raises(TypeError, match=r"rank belong\(s\) to the estimator"):
        explain(lambda x: x, X, rank=0.9)
    with pytest.raises(TypeError, match=r"unknown ACE setting\(s\) \['shift'\]; the settings are") as err:
        explain(lambda x: x, X, shift=2)
    assert "belong" not in str(err.value)
    define_at_mean_plus()  # a class with the setting 'shift'
    try:
        with pytest.raises(TypeError, match=r"shift belong\(s\) to the estimator"):
            explain(lambda x: x, X, shift=2)
    finally:
        E.unregister_estimator(NAME)
