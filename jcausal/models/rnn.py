"""GRU/LSTM sequence models: a length-aware sequence classifier and a one-step predictor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jcausal.models.core import get_activation

__all__ = ["SequenceClassifier", "OneStepPredictor"]


def _cell(kind: str, in_features: int, hidden: int, activation: str, gate: str, rngs):
    kw = dict(gate_fn=get_activation(gate), activation_fn=get_activation(activation), rngs=rngs)
    if kind == "gru":
        return nnx.GRUCell(in_features, hidden, **kw)
    if kind == "lstm":
        return nnx.LSTMCell(in_features, hidden, **kw)
    raise ValueError(f"cell must be 'gru' or 'lstm', got {kind!r}")


def _as_sequence(x: jax.Array, in_features: int) -> jax.Array:
    if x.ndim == 1 and in_features == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != in_features:
        raise ValueError(f"expected one sequence of shape (T, {in_features}), got {x.shape}")
    return x


class _Recurrent(nnx.Module):
    def __init__(self, in_features, hidden, out_features, cell, activation, gate, output_activation,
                 rngs):
        get_activation(output_activation)
        self.in_features, self.hidden, self.kind = in_features, hidden, cell
        self.output_activation = output_activation
        self.cell = _cell(cell, in_features, hidden, activation, gate, rngs)
        self.readout = nnx.Linear(hidden, out_features, rngs=rngs)

    def init_carry(self):
        """The zero initial carry (``(hidden,)``, or a pair of them for LSTM)."""
        z = jnp.zeros((self.hidden,), self.readout.kernel.dtype)
        return (z, z) if self.kind == "lstm" else z

    def step(self, carry, x_t: jax.Array):
        """One time step: ``(carry, x_t (in_features,)) -> (carry, output (out_features,))``."""
        carry, h = self.cell(carry, x_t)
        return carry, get_activation(self.output_activation)(self.readout(h))


class SequenceClassifier(_Recurrent):
    """Many-to-one recurrent classifier on ONE sequence (ACE paper section 5.2 uses a GRU with one
    input, one hidden and one output unit, sigmoid activations).

    Call: ``model(x, length=None, key=None)`` with ``x`` of shape ``(T, in_features)`` (or ``(T,)``
    when ``in_features == 1``); returns ``(out_features,)`` read out from the state after step
    ``length - 1`` -- padding past ``length`` never touches the state. With ``all_steps=True`` it
    returns the readout after every step, ``(T, out_features)`` (for per-step training losses).
    ``reverse=True`` reads the valid steps from last to first (so ``x[0]`` is read last).
    ``output_activation`` defaults to ``identity`` (logits).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jcausal.models import SequenceClassifier
      >>> gru = SequenceClassifier(1, 1, 1, output_activation="sigmoid", rngs=nnx.Rngs(0))
      >>> x = jnp.linspace(-1, 1, 12)[:, None]               # (T, 1)
      >>> gru(x, length=10).shape
      (1,)
      >>> bool(jnp.allclose(gru(x, length=10), gru(x.at[10:].set(5.0), length=10)))   # padding ignored
      True
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, *, cell: str = "gru",
                 activation: str = "tanh", gate: str = "sigmoid",
                 output_activation: str = "identity", reverse: bool = False, rngs: nnx.Rngs):
        super().__init__(in_features, hidden, out_features, cell, activation, gate,
                         output_activation, rngs)
        self.reverse = reverse

    def __call__(self, x: jax.Array, length: jax.Array | None = None, *,
                 key: jax.Array | None = None, all_steps: bool = False) -> jax.Array:
        del key  # no dropout
        x = _as_sequence(x, self.in_features)
        T = x.shape[0]
        length = T if length is None else length
        if self.reverse:  # read the valid steps last-to-first (padding stays at the end)
            t = jnp.arange(T)
            x = x[jnp.where(t < length, length - 1 - t, t)]

        def body(carry, inp):
            t, x_t = inp
            new, h = self.cell(carry, x_t)
            keep = t < length
            return jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, carry), h

        carry, hs = jax.lax.scan(body, self.init_carry(), (jnp.arange(T), x))
        act = get_activation(self.output_activation)
        if all_steps:  # (T, out): the readout after every step (rows >= length are padding)
            return act(jax.vmap(self.readout)(hs))
        h = carry[1] if self.kind == "lstm" else carry
        return act(self.readout(h))


class OneStepPredictor(_Recurrent):
    """Sequence-to-sequence predictor of the next input (output-to-input feedback at inference,
    ACE paper section 4.5 and Algorithm 2).

    Call: ``model(x, key=None)`` with ``x`` ``(T, in_features)`` -> ``(T, in_features)`` where row
    ``t`` predicts ``x[t + 1]``. :meth:`step` advances one step for closed-loop rollouts.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jcausal.models import OneStepPredictor
      >>> pred = OneStepPredictor(2, 4, rngs=nnx.Rngs(0))
      >>> pred(jnp.zeros((5, 2))).shape                       # row t predicts x[t + 1]
      (5, 2)
      >>> carry, y = pred.step(pred.init_carry(), jnp.zeros(2))
      >>> y.shape
      (2,)
    """

    def __init__(self, in_features: int, hidden: int, *, cell: str = "gru",
                 activation: str = "tanh", gate: str = "sigmoid",
                 output_activation: str = "identity", rngs: nnx.Rngs):
        super().__init__(in_features, hidden, in_features, cell, activation, gate,
                         output_activation, rngs)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        del key
        x = _as_sequence(x, self.in_features)
        _, ys = jax.lax.scan(self.step, self.init_carry(), x)
        return ys
