"""Shared building blocks used by every paper's package (``ace``, ``gce``, ``tracer``).

- :mod:`jcausal._src.io`: atomic file writes and output-folder locks.
- :mod:`jcausal._src.calling`: how a user callable is called (``f(x)`` or ``f(params, x)``).
- :mod:`jcausal._src.batching`: pad, batch (``lax.map``) and shard a set of points.

Private: the public surface re-exports what users need.
"""
