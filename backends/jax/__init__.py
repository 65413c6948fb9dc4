"""The JAX backend: the whole chunk of training steps is one ``jax.jit`` program (a ``fori_loop``)."""

from __future__ import annotations

from gradpath.backends.compile_cache import enable_jax_cache
from gradpath.backends.jax.trainer import JaxBackend


def backend() -> JaxBackend:
    """The entry point the backend registry calls; turns on the persistent compilation cache
    (gradpath.backends.compile_cache) before anything compiles."""
    enable_jax_cache()
    return JaxBackend()
