"""The JAX backend: the whole chunk of training steps is one ``jax.jit`` program (a ``fori_loop``)."""

from __future__ import annotations

from backends.jax.trainer import JaxBackend


def backend() -> JaxBackend:
    """The entry point the backend registry calls."""
    return JaxBackend()
