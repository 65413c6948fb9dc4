"""Hessian-vector products of a PINN loss with JAX: forward-over-reverse (``jvp`` of ``grad``).

The loss is the one the trainer minimises (gradpath.backends.losses.term_losses), as a function of the
selected parameters flattened into one vector; the others stay fixed. Products with a block of
vectors are ``vmap``-ed and compiled once per (problem, network, parameter set, term): the
parameters, points and weights are arguments, so monitoring sigma_max every 1000 steps does not
recompile. See gradpath.backends.diagnostics.hessian_operator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from gradpath.backends.losses import term_losses
from gradpath.problems.core import Problem


@lru_cache(maxsize=32)
def _block_product(problem: Problem, keys: tuple[str, ...], shapes: tuple[tuple[int, ...], ...],
                   index: int | None, net: str, gate: str) -> Callable:
    """A jitted ``(x0, fixed, points, mu, sigma, weights, V) -> H V`` for one loss and parameter layout."""
    splits = np.cumsum([int(np.prod(s)) for s in shapes])[:-1].tolist()

    def loss(x, fixed, pts, mu, sigma, w):
        p = dict(fixed)
        p.update({k: jnp.reshape(part, shape) for k, part, shape in zip(keys, jnp.split(x, splits), shapes)})
        losses = term_losses(jnp, problem, p, pts, mu, sigma, net=net, gate=gate)
        return jnp.dot(w, losses) if index is None else w[index] * losses[index]

    grad = jax.grad(loss)

    def block(x0, fixed, pts, mu, sigma, w, vs):
        def hvp(v):
            return jax.jvp(lambda x: grad(x, fixed, pts, mu, sigma, w), (x0,), (v,))[1]

        return jax.vmap(hvp, in_axes=1, out_axes=1)(vs)

    return jax.jit(block)


def hessian_matmat(problem: Problem, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray,
                   batch: Sequence[np.ndarray], weights: np.ndarray, keys: Sequence[str], *,
                   index: int | None, net: str, gate: str,
                   dtype: str) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """``(n, matmat)``: the Hessian of ``weights[index] * L_index`` (or of sum_i weights_i L_i if
    ``index`` is None) w.r.t. the parameters ``keys``, as ``V (n, k) -> H V (n, k)`` in float64 numpy."""
    if dtype == "float64":
        # process-wide, as in the trainer; float32 arrays elsewhere keep their explicit dtype
        jax.config.update("jax_enable_x64", True)
    dt = jnp.dtype(dtype)
    put = lambda a: jnp.asarray(np.asarray(a), dtype=dt)  # noqa: E731
    keys = tuple(keys)
    shapes = tuple(tuple(np.shape(params[k])) for k in keys)
    fixed = {k: put(v) for k, v in params.items() if k not in keys}
    x0 = put(np.concatenate([np.ravel(params[k]) for k in keys]))
    args = (x0, fixed, [put(b) for b in batch], put(mu), put(sigma), put(weights))
    block = _block_product(problem, keys, shapes, index, net, gate)

    def matmat(v: np.ndarray) -> np.ndarray:
        with jax.default_matmul_precision("highest"):  # no TF32 on GPUs, as in the trainer
            return np.asarray(block(*args, put(v)), np.float64)

    return int(x0.shape[0]), matmat
