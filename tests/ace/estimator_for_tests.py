"""A test-only estimator, shared by the tests that register one (tests/ace/test_estimators.py,
tests/ace/test_attribution.py): ``f(mu_ia) + shift``, with a setting ``shift`` no built-in
estimator has."""

from typing import ClassVar

import jax.numpy as jnp

from jcausal.ace import estimators as E

NAME = "at_mean_plus_test"


def define_at_mean_plus():
    """Register and return the class (unregister it with ``E.unregister_estimator(NAME)``)."""

    @E.register_estimator
    class AtMeanPlus(E.Estimator):
        """Test-only: ``f(mu_ia) + shift`` (eqn 4 without its second-order term, shifted)."""

        name: ClassVar[str] = NAME
        shift: float = E.static(0.25)

        def point(self, model, params, mom, i, a, pid):
            f0 = model(params, mom.mean.at[i].set(a))
            return f0 + self.shift, jnp.zeros_like(f0)

    return AtMeanPlus
