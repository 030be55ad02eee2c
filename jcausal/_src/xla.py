"""``jit``: ``jax.jit`` with the XLA:CPU compiler options jcausal relies on.

jaxlib 0.10's XLA:CPU hands a convolution whose output is written to memory to YNNPACK (an
"individual convolution" fusion), which runs single-threaded and several times slower than XLA's
own convolution on a multi-core CPU (README, "XLA:CPU settings jcausal compiles with"). The other
default YNNPACK fusions (dots and reductions) are kept: compiled programs without convolutions are
unchanged (checked on the eqn-2 program of an MLP). Element-wise YNNPACK fusions stay off (they fail
on some float64 layouts). The option is passed per compiled program
(``jax.jit(..., compiler_options=...)``), so nothing global changes: the user's own ``jax.jit`` code
and ``XLA_FLAGS`` are untouched.

Skipped (plain ``jax.jit``) when the default backend is not the CPU, when ``XLA_FLAGS`` already
sets ``xla_cpu_experimental_ynn_fusion_type`` (the user's choice wins), when
``JCAUSAL_XLA_DEFAULTS=1`` is set, or when the installed jaxlib does not know the option.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["jit", "cpu_compiler_options"]

_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_NO_INDIVIDUAL_CONV = ",".join(
    f"LIBRARY_FUSION_TYPE_{t}" for t in ("INDIVIDUAL_DOT", "REDUCE"))


@functools.cache
def cpu_compiler_options() -> dict[str, str] | None:
    """The compiler options :func:`jit` adds (``None``: none; decided once per process, at the
    first compile, so ``XLA_FLAGS`` and the device count can still be set after import)."""
    if os.environ.get("JCAUSAL_XLA_DEFAULTS", "") not in ("", "0"):
        return None
    if _OPTION in os.environ.get("XLA_FLAGS", ""):
        return None
    try:
        if jax.default_backend() != "cpu":
            return None
        opts = {_OPTION: _NO_INDIVIDUAL_CONV}
        jax.jit(lambda x: x + 1, compiler_options=opts).lower(jnp.zeros((), jnp.float32)).compile()
        return opts
    except Exception:  # an older jaxlib without the option (or without compiler_options)
        return None


def _top_level() -> bool:
    """Whether we are outside any JAX trace (``compiler_options`` only apply to a top-level jit)."""
    try:
        from jax._src import core

        return bool(core.trace_state_clean())
    except Exception:  # pragma: no cover - a JAX without it: plain jax.jit everywhere
        return False


class _Jit:
    """A ``jax.jit`` built at first use (call, ``lower``, ``eval_shape``, ...)."""

    def __init__(self, fun: Callable, kwargs: dict[str, Any]):
        self._fun, self._kwargs, self._jitted, self._plain = fun, kwargs, None, None
        functools.update_wrapper(self, fun)

    def _get(self):
        if not _top_level():  # inside another trace: options belong to the outer jit
            if self._plain is None:
                self._plain = jax.jit(self._fun, **self._kwargs)
            return self._plain
        if self._jitted is None:
            opts = cpu_compiler_options()
            kw = dict(self._kwargs)
            if opts is not None:
                kw["compiler_options"] = {**opts, **(kw.get("compiler_options") or {})}
            self._jitted = jax.jit(self._fun, **kw)
        return self._jitted

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fun: Callable | None = None, /, **kwargs):
    """Drop-in ``jax.jit`` (same keyword arguments; also usable as ``jit(static_argnames=...)``
    decorator factory) that adds :func:`cpu_compiler_options`."""
    if fun is None:
        return lambda f: _Jit(f, kwargs)
    return _Jit(fun, kwargs)
