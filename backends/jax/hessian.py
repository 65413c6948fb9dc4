"""Hessian-vector products of a PINN loss with JAX: forward-over-reverse (``jvp`` of ``grad``).

The loss and its flattening are gradpath.backends.diagnostics.flat_loss, shared with torch.
Products with a block of vectors are ``vmap``-ed and compiled once per (problem, network,
parameter set, term): the parameters, points and weights are arguments, so monitoring sigma_max
every 1000 steps does not recompile. Reached through the registry as ``JaxBackend.hessian_matmat``
(see gradpath.backends.diagnostics.hessian_operator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from gradpath.backends.diagnostics import flat_loss, flat_parameters
from gradpath.problems.core import Problem


@lru_cache(maxsize=32)
def _block_product(problem: Problem, keys: tuple[str, ...], shapes: tuple[tuple[int, ...], ...],
                   index: int | None, net: str, gate: str) -> Callable:
    """A jitted ``(x0, fixed, points, mu, sigma, weights, V) -> H V`` for one loss and parameter layout."""
    grad = jax.grad(flat_loss(jnp, problem, keys, shapes, index=index, net=net, gate=gate,
                               split=jnp.split))

    def block(x0, fixed, pts, mu, sigma, w, vs):
        def hvp(v):
            return jax.jvp(lambda x: grad(x, fixed, pts, mu, sigma, w), (x0,), (v,))[1]

        return jax.vmap(hvp, in_axes=1, out_axes=1)(vs)

    return jax.jit(block)


def hessian_matmat(problem: Problem, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray,
                   batch: Sequence[np.ndarray], weights: np.ndarray, keys: Sequence[str], *,
                   index: int | None, net: str, gate: str,
                   dtype: str) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """See gradpath.backends.protocol.HessianMatmat."""
    if dtype == "float64":
        # process-wide, as in the trainer; float32 arrays elsewhere keep their explicit dtype
        jax.config.update("jax_enable_x64", True)
    dt = jnp.dtype(dtype)
    put = lambda a: jnp.asarray(np.asarray(a), dtype=dt)  # noqa: E731
    x0, shapes, fixed = flat_parameters(params, keys)
    args = (put(x0), {k: put(v) for k, v in fixed.items()}, [put(b) for b in batch], put(mu), put(sigma),
            put(weights))
    block = _block_product(problem, tuple(keys), shapes, index, net, gate)

    def matmat(v: np.ndarray) -> np.ndarray:
        with jax.default_matmul_precision("highest"):  # no TF32 on GPUs, as in the trainer
            return np.asarray(block(*args, put(v)), np.float64)

    return x0.size, matmat
