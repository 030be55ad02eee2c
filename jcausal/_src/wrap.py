"""``jcausal.wrap``: any model as the one model contract (DESIGN.md section 4).

A researcher's model (Flax NNX or Linen, Equinox, Keras 3 on JAX, PyTorch, or a plain function)
becomes a :class:`Wrapped`: a pure ``apply(params, x)`` of ONE example with its ``params``, what its
output is (``"probabilities"`` or ``"raw"``), the :class:`jcausal.models.Split` of the eqn-2 fast
path found from the jaxpr (:mod:`jcausal._src.split_finder`) and the layer outputs for TRACER, named
as the framework names them. Conversion happens once, here; parameters are always passed as
arguments, so compiled programs never outlive the model state they were traced from (wrap the model
again after training it further).
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src import wrap_layers
from jcausal._src.calling import Classifier, Split, bind_model
from jcausal._src.checks import require_finite, require_real
from jcausal._src.split_finder import JaxprFunction, find_split

__all__ = ["ACCEPTED", "Wrapped", "bind_classifier", "output_kind", "wrap"]

ACCEPTED = (
    "a flax.nnx.Module, a flax.linen.Module (with params=variables), an equinox.Module, a "
    "keras.Model on the JAX backend, a torch.nn.Module, a JAX function f(x) (or f(params, x) "
    "with params=), or a jcausal.models.Split"
)
OUTPUTS = ("probabilities", "raw")


class Wrapped:
    """A model in jcausal's contract (build it with :func:`wrap`).

    Attributes:
      apply: ``apply(params, x) -> y``: pure, ONE example ``x`` of the ``example``'s shape (or its
        flattening, ``(k,)``), no batch axis.
      split: :class:`jcausal.models.Split` with the affine prefix on ``x`` (eqn 2 fast path), or
        ``None`` when the computation does not start with a dense/convolutional layer.
      output: ``"probabilities"`` or ``"raw"``.
      framework: ``"nnx"``, ``"linen"``, ``"equinox"``, ``"keras"``, ``"torch"`` or ``"function"``.
      input_shape: the shape of one example.
    """

    def __init__(self, apply, params, *, framework: str, input_shape, output: str, split, taps,
                 reader: Callable | None = None):
        self.apply, self._params, self._reader, self.framework = apply, params, reader, framework
        self.input_shape, self.output, self.split, self._taps = tuple(input_shape), output, split, taps
        self._warned = False
        self._jitted = jax.jit(apply)

    @property
    def params(self):
        """The parameters (a pytree of arrays). For an NNX, Keras or PyTorch model and a plain
        function's closed-over arrays they are read from the model at every access (a model trained
        further after wrapping is evaluated as it is now, never in its old state); Linen variables,
        an Equinox module's arrays and ``params=`` are the ones given."""
        return self._params if self._reader is None else self._reader()

    def __call__(self, x):
        """Evaluate ONE example ``x`` (``input_shape`` or flattened); compiled once per shape."""
        return self._jitted(self.params, jnp.asarray(x))

    def __jcausal_model__(self, split: bool = True) -> tuple[Callable | Split, Any]:
        """The pure form jcausal's entry points use: ``(split or apply, params)``; ``split=False``
        gives ``apply`` (for entry points that call the model whole). Warns once when a split is
        asked for and none was found (eqn 2 then evaluates the whole model per intervention)."""
        if not split:
            return self.apply, self.params
        if self.split is None and not self._warned:
            self._warned = True
            warnings.warn(
                f"jcausal.wrap found no affine first layer on x in this {self.framework} model: "
                "eqn 2 evaluates the whole model for every (row, feature, alpha)",
                UserWarning,
                stacklevel=3,
            )
        return (self.apply if self.split is None else self.split), self.params

    def __jcausal_taps__(self):
        """``(taps, params)``: ``taps(params, x) -> (output, [(layer name, value), ...])`` on ONE
        example, named as the framework names its layers (what :func:`jcausal.tracer.layer_outputs`
        selects from)."""
        if self._taps is None:
            raise TypeError(f"a wrapped {self.framework} has no layers to name")
        return self._taps, self.params

    def __repr__(self):
        split = "found" if self.split is not None else "none"
        return (
            f"Wrapped({self.framework}, input_shape={self.input_shape}, output={self.output!r}, "
            f"split={split})"
        )


def _parameters(fn) -> tuple[str, ...]:
    """The parameter names of ``fn`` (empty when its signature cannot be read)."""
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return ()


def _check_call(fn, n_inputs: int, kwargs: dict, what: str) -> None:
    """Refuse a call signature that leaves required arguments unbound, or unknown keywords."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    ps = list(sig.parameters.values())
    kinds = inspect.Parameter
    if any(p.kind == kinds.VAR_POSITIONAL for p in ps):
        return
    positional = [p for p in ps if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    if len(positional) < n_inputs:
        raise TypeError(
            f"{what} takes {len(positional)} positional argument(s); jcausal calls it with "
            f"{n_inputs} ({'params, x' if n_inputs == 2 else 'x'})"
        )
    rest = positional[n_inputs:] + [p for p in ps if p.kind == kinds.KEYWORD_ONLY]
    missing = [p.name for p in rest if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if n_inputs == 1 and len(positional) >= 2 and missing and missing[0] == positional[1].name:
        first, second = positional[0].name, positional[1].name
        raise TypeError(
            f"{what} takes ({first}, {second}, ...) and no params= was given: a function f(params, x) "
            f"needs its parameters, jcausal.wrap(f, x, params=...); or bind {second!r} by keyword"
        )
    names = {p.name for p in rest}
    takes_any = any(p.kind == kinds.VAR_KEYWORD for p in ps)
    unknown = [] if takes_any else [k for k in kwargs if k not in names]
    also = f"; and it takes no argument(s) {unknown} (misspelt?)" if unknown else ""
    if missing:  # both named at once: a misspelt keyword is usually the missing one
        raise TypeError(
            f"{what} has required argument(s) {missing} that jcausal cannot supply: bind "
            f"them by keyword, e.g. jcausal.wrap(model, x, {missing[0]}=...){also}"
        )
    if unknown:
        raise TypeError(f"{what} takes no argument(s) {unknown}; its arguments are {sorted(names)}")


def _framework(model) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.layers.Layer):
        return "keras"
    from flax import linen, nnx

    if isinstance(model, nnx.Module):
        return "nnx"
    if isinstance(model, linen.Module):
        return "linen"
    eqx = sys.modules.get("equinox")
    if eqx is not None and isinstance(model, eqx.Module):
        return "equinox"
    if (callable(model) and not isinstance(model, type)) or isinstance(model, Split):
        return "function"
    raise TypeError(
        f"jcausal.wrap cannot use a {type(model).__module__}.{type(model).__name__}: it accepts {ACCEPTED}"
    )


def _adapt_nnx(model, example, params, kwargs):
    from flax import nnx

    _check_call(type(model).__call__, 2, kwargs, f"{type(model).__name__}.__call__")
    if params is not None:
        raise ValueError("params= is not used with an nnx.Module: its current state is read at wrap time")
    graphdef, state = nnx.split(model)
    graphdef = _nnx_inference(model, graphdef, state, example, kwargs)
    takes_key = "key" in _parameters(type(model).__call__) and "key" not in kwargs
    return (
        (lambda p, x: nnx.merge(graphdef, p)(x, **kwargs)),
        state,
        wrap_layers.nnx_taps(graphdef, kwargs, takes_key),
        None,
        lambda: nnx.state(model),
    )


def _training_mode(model) -> list[str]:
    """The submodules of an NNX model in training mode: dropout that is not deterministic, batch
    statistics that are not running averages (``name (Type)``, by attribute path)."""
    from flax import nnx

    found = []
    for path, m in nnx.iter_graph(model):
        if isinstance(m, nnx.Module) and (getattr(m, "deterministic", None) is False
                                          or getattr(m, "use_running_average", None) is False):
            found.append(f"{'.'.join(map(str, path)) or 'the model'} ({type(m).__name__})")
    return found


def _nnx_inference(model, graphdef, state, example, kwargs):
    """The graphdef to evaluate ``model`` with. A model with submodules in training mode (dropout
    applying a mask frozen in its RNG state, batch norm normalising ONE example by itself) whose
    output at ``example`` changes in inference mode is evaluated in inference mode: the graphdef of
    a copy after ``.eval()`` (the user's model is left as it is; its state is read as always), with
    a warning naming the submodules. A model whose call already fixes the mode keeps its own."""
    from flax import nnx

    modes = _training_mode(model)
    if not modes:
        return graphdef
    copy = nnx.clone(model)
    copy.eval()
    g_eval = nnx.split(copy)[0]
    x = jnp.asarray(example)
    for xb in (x, x[None]):  # one example, or a batch of one
        try:
            now = jax.tree.leaves(nnx.merge(graphdef, state)(xb, **kwargs))
            inference = jax.tree.leaves(nnx.merge(g_eval, state)(xb, **kwargs))
            break
        except Exception:  # noqa: BLE001 -- wrap names the shape the model rejects
            continue
    else:
        return graphdef
    if all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(now, inference)):
        return graphdef
    warnings.warn(
        f"jcausal.wrap: the {type(model).__name__} has submodules in training mode ({', '.join(modes)}): "
        "its output depends on a frozen dropout mask or on the batch's own statistics. jcausal "
        "evaluates it in inference mode (as after model.eval(); your model is left as it is)",
        UserWarning,
        stacklevel=4,
    )
    return g_eval


def _adapt_linen(model, example, params, kwargs):
    _check_call(type(model).__call__, 2, kwargs, f"{type(model).__name__}.__call__")
    if params is None:
        raise ValueError(
            "a flax.linen.Module needs its variables: jcausal.wrap(module, x, params=module.init(key, x))"
        )
    taps = wrap_layers.linen_taps(model, kwargs)
    return (lambda p, x: model.apply(p, x, **kwargs)), params, taps, None, None


def _adapt_equinox(model, example, params, kwargs):
    import equinox as eqx

    _check_call(type(model).__call__, 2, kwargs, f"{type(model).__name__}.__call__")
    if params is not None:
        raise ValueError("params= is not used with an equinox.Module: its arrays are its parameters")
    arrays, static = eqx.partition(model, eqx.is_array)
    return (
        (lambda p, x: eqx.combine(p, static)(x, **kwargs)),
        arrays,
        wrap_layers.eqx_taps(static, kwargs),
        None,
        None,
    )


def _adapt_keras(model, example, params, kwargs):
    import keras

    if keras.backend.backend() != "jax":
        raise ValueError(
            f"this keras model runs on the {keras.backend.backend()!r} backend; jcausal needs "
            "Keras on JAX: set the environment variable KERAS_BACKEND=jax before importing "
            "keras (os.environ['KERAS_BACKEND'] = 'jax'), then build the model again"
        )
    if params is not None:
        raise ValueError("params= is not used with a keras model: its variables are its parameters")
    if not model.built:
        model(np.asarray(example)[None])

    def read():
        return {
            "trainable": [v.value for v in model.trainable_variables],
            "non_trainable": [v.value for v in model.non_trainable_variables],
        }

    def raw(p, x):
        kw = {"training": False, **kwargs}
        # Keras relies on NumPy's implicit rank and dtype promotion
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            return model.stateless_call(p["trainable"], p["non_trainable"], x, **kw)[0]

    return raw, read(), wrap_layers.keras_taps(model, raw), True, read


def _adapt_torch(model, example, params, kwargs):
    from jcausal._src.torch_convert import convert

    if params is not None:
        raise ValueError("params= is not used with a torch module: its weights are copied")
    conv = convert(model, example, **kwargs)
    return conv.apply, conv.params, conv.taps, conv.batched, _torch_reader(model, conv.params)


def _adapt_function(model, example, params, kwargs):
    if isinstance(model, Split):  # the user's own split: called whole, and kept as the eqn-2 split
        if kwargs:
            raise TypeError("a Split takes no call keyword arguments")
        if params is not None:  # a plain function: jax.jit crashes (SIGSEGV) on a NamedTuple callable
            return (lambda p, x: model.rest(p, model.first(p, x))), params, None, None, None
        return _adapt_function(lambda x: model.rest(model.first(x)), example, None, {})
    if params is not None:
        _check_call(model, 2, kwargs, getattr(model, "__name__", "f"))
        return (lambda p, x: model(p, x, **kwargs)), params, None, None, None
    _check_call(model, 1, kwargs, getattr(model, "__name__", "f"))
    closed = jax.make_jaxpr(lambda x: model(x, **kwargs))(example)
    if len(closed.jaxpr.outvars) != 1:
        raise TypeError(
            f"the model returned {len(closed.jaxpr.outvars)} arrays; jcausal needs one array "
            "(select one with head=, e.g. head=lambda out: out[0])"
        )
    # closed-over arrays become parameters: passed as arguments, never compiled in as constants
    fn = JaxprFunction(
        closed.jaxpr.eqns,
        closed.jaxpr.constvars,
        closed.jaxpr.invars[0],
        tuple(example.shape),
        closed.jaxpr.outvars[0],
        {},
        jax.tree.structure(list(closed.consts)),
        "wrapped function",
    )

    def read():  # the closed-over arrays as they are now (the computation traced at wrap time)
        consts = jax.make_jaxpr(lambda x: model(x, **kwargs))(example).consts
        if len(consts) != len(closed.consts):
            raise ValueError("the wrapped function now reads other arrays than when it was wrapped: "
                             "wrap it again")
        return list(consts)

    return fn, list(closed.consts), None, False, read


_ADAPTERS = {"nnx": _adapt_nnx, "linen": _adapt_linen, "equinox": _adapt_equinox, "keras": _adapt_keras,
             "torch": _adapt_torch}


def _adapt(kind, model, example, params, kwargs):
    """``(raw(params, xb), params, taps(params, xb), batched_default, reader)`` for each framework;
    ``reader()`` gives the parameters as they are now (``None``: they cannot change)."""
    return _ADAPTERS.get(kind, _adapt_function)(model, example, params, kwargs)


def _torch_reader(module, snapshot: dict) -> Callable:
    """The module's current weights, copied again only when a tensor changed (its version counter or
    storage: an optimizer step, ``load_state_dict``, an in-place edit)."""
    cache = {"key": None, "params": snapshot}

    def read():
        sd = module.state_dict(keep_vars=True)
        ts = {n: sd[n] for n in snapshot if n in sd}
        key = tuple((n, t.data_ptr(), t._version) for n, t in ts.items())
        if key != cache["key"]:
            now = {n: jnp.asarray(t.detach().cpu().numpy()) for n, t in ts.items()}
            cache["params"] = {**snapshot, **now}
            cache["key"] = key
        return cache["params"]

    read()
    return read


def _shape_error(kind, model, shape, err) -> ValueError:
    hint = ""
    if kind == "keras" and getattr(model, "built", False):
        try:
            hint = f"; it expects inputs of shape {model.input_shape} (batch axis first)"
        except (AttributeError, ValueError):
            pass
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ValueError(f"the {kind} model rejects an example of shape {tuple(shape)}{hint}: {msg}")


def _is_probabilities(y) -> bool:
    y = np.asarray(y, np.float64)
    return (
        y.ndim >= 1
        and y.shape[-1] > 1
        and bool(np.all(y >= 0))
        and bool(np.all(np.abs(y.sum(-1) - 1.0) < 1e-4))
    )


def output_kind(apply: Callable, params, example) -> str:
    """``"probabilities"`` when ``apply(params, x)`` is a probability vector (>= 2 entries, >= 0,
    summing to 1 within 1e-4) at ``example`` and, for float inputs, at ``0.5 * example + 0.25``;
    ``"raw"`` otherwise. Evaluated by one compiled program per traced computation (a model wrapped
    again, or passed unwrapped to several calls, does not compile its forward pass again); the
    parameters are arguments of that program."""
    example = jnp.asarray(example)
    xs = [example] + ([0.5 * example + 0.25] if jnp.issubdtype(example.dtype, jnp.floating) else [])
    model, bound = bind_model(apply, params, jax.ShapeDtypeStruct(example.shape, example.dtype))
    return "probabilities" if all(_is_probabilities(_evaluate(model, bound, x)) for x in xs) else "raw"


@partial(jax.jit, static_argnums=0)
def _evaluate(model, params, x):
    return model(params, x)


def wrap(
    model,
    example,
    *,
    params=None,
    head: Callable | None = None,
    output: str | None = None,
    batched: bool | None = None,
    split: bool = True,
    **call_kwargs,
) -> Wrapped:
    """Wrap a model of any supported framework as a pure function of ONE example.

    Args:
      model: a ``flax.nnx.Module`` (its current state is read now), a ``flax.linen.Module`` (with
        ``params=variables``), an ``equinox.Module``, a Keras 3 model on the JAX backend (variables
        read now; non-trainable ones held fixed, ``training=False``), a ``torch.nn.Module`` (converted
        once through ``torch.export``, weights copied, eval mode) or a JAX function ``f(x)`` (closed-over
        arrays become parameters) / ``f(params, x)`` with ``params=``, or a
        :class:`jcausal.models.Split` (with ``params=``: its ``first`` is the eqn-2 split as given).
      example: ONE input, in the layout the model takes (e.g. ``(C, H, W)`` for torch, ``(H, W, C)``
        for Keras/Flax); the wrapped function also accepts its flattening ``(k,)``.
      params: the parameters of a Linen module (its variables) or of ``f(params, x)``.
      head: a function applied to the model output (e.g. ``jax.nn.softmax``, or selecting one of
        several outputs).
      output: ``"probabilities"`` or ``"raw"``; default: detected (softmax-normalized outputs on the
        example are probabilities; ``head=jax.nn.softmax`` gives probabilities).
      batched: whether the model expects a batch axis (added before, removed after the call).
        Default: Keras yes; otherwise tried without, then with one. PyTorch: always (the graph is
        exported for a batch of one; ``batched=`` is ignored).
      split: look for the eqn-2 fast path (``False`` skips it).
      **call_kwargs: extra keyword arguments of the model's call (e.g. ``deterministic=True``).

    Returns:
      :class:`Wrapped`.

    Raises:
      TypeError: an unsupported model, unbound required call arguments, an output that is not one array.
      ValueError: an example the model rejects (naming its shape), a Keras model on another backend.
    """
    if isinstance(model, Wrapped):
        return model
    if output is not None and output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    kind = _framework(model)
    require_real(example, "example")  # integers pass (token ids); bool, complex, strings do not
    example = jnp.asarray(example)
    if example.ndim == 0:
        raise ValueError("example must be ONE input with at least one axis, got a scalar")
    if example.size == 0:
        raise ValueError(f"example has shape {tuple(example.shape)}, with no entries: pass ONE input")
    require_finite(example, "example", rows=None, fix="pass ONE real input the model accepts")
    shape = tuple(example.shape)
    given_split = model if isinstance(model, Split) and params is not None else None  # kept as is
    raw, params, taps, default_batched, reader = _adapt(kind, model, example, params, call_kwargs)
    tries = (
        [batched]
        if batched is not None
        else ([default_batched] if default_batched is not None else [False, True])
    )
    if kind == "torch":
        tries = [True]  # the converted graph takes the batch axis it was exported with
    first_err, out = None, None
    for b in tries:
        try:
            out = jax.eval_shape(
                raw, params, jax.ShapeDtypeStruct((1, *shape) if b else shape, example.dtype)
            )
            batched = b
            break
        except Exception as err:  # noqa: BLE001 -- any framework's shape error
            first_err = first_err or err
    if out is None:
        raise _shape_error(kind, model, shape, first_err) from first_err
    leaves = jax.tree.leaves(out)
    if head is None and (len(leaves) != 1 or not hasattr(out, "shape")):
        raise TypeError(
            f"the {kind} model returned {type(out).__name__} of {len(leaves)} arrays; jcausal needs "
            "one array (select one with head=, e.g. head=lambda out: out[0])"
        )
    if batched and (not leaves or leaves[0].shape[:1] != (1,)):
        raise ValueError(
            f"the {kind} model's output {leaves[0].shape if leaves else ()} has no batch axis; "
            "pass batched=False"
        )
    apply = wrap_layers.PerExample(raw, shape, bool(batched), head, dtype=example.dtype)
    y = jax.eval_shape(apply, params, example)
    if not isinstance(y, jax.ShapeDtypeStruct):
        raise TypeError(f"head= must return one array, got {type(y).__name__}")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(f"the {kind} model returns {y.dtype} values; jcausal needs real-valued outputs "
                        "(scores, logits or probabilities), not class indices (e.g. drop an argmax)")
    if output is None:
        if head is jax.nn.softmax:
            output = "probabilities"
        else:
            output = output_kind(apply, params, example)
    if not split:
        found = None
    elif given_split is not None:
        found = given_split if head is None else given_split.then(head)
    else:
        found = find_split(apply, params, example)
    ltaps = None if taps is None else wrap_layers.PerExample(taps, shape, bool(batched), head, layers=True,
                                                             dtype=example.dtype)
    return Wrapped(apply, params, framework=kind, input_shape=shape, output=output, split=found, taps=ltaps,
                   reader=reader)


def bind_classifier(model: Wrapped, what: str = "the classifier") -> tuple[Classifier, Any]:
    """``(classifier, params)`` of a wrapped classifier for compiled programs: a :class:`Classifier`
    (the static argument: it hashes by the traced computation, so programs are reused across calls
    and fresh wraps of the same model) and the arrays it reads now (passed as arguments, never
    compiled in: no program outlives the model's state). ``what`` names it in errors.

    Raises:
      TypeError: ``model`` is not a :class:`Wrapped` (call :func:`wrap` first: the one entry).
      ValueError: its output is not one vector of at least 2 class scores.
    """
    if not isinstance(model, Wrapped):
        raise TypeError(f"{what} must be wrapped first (jcausal.wrap(model, example)), got "
                        f"{type(model).__name__}")
    example = jax.ShapeDtypeStruct(model.input_shape, jnp.float32)
    fn, params = bind_model(model.apply, model.params, example)
    out = jax.eval_shape(lambda p, x: fn(p, x), params, example)
    if len(out.shape) != 1 or out.shape[0] < 2:
        raise ValueError(f"{what} must return one vector of at least 2 class scores for ONE input, got shape "
                         f"{tuple(out.shape)}")
    return Classifier(fn, model.input_shape, model.output == "probabilities"), params
