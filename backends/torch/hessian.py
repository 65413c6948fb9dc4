"""Hessian-vector products of a PINN loss with PyTorch: forward-over-reverse (``torch.func.jvp`` of ``grad``).

The same loss and flattening as backends/jax/hessian.py, so both backends give the same operator
(tests/test_diagnostics.py). Products with a block of vectors are ``vmap``-ed; they run eagerly:
an operator is used for tens of products (Lanczos) or one dense pass, where compiling would cost
more than it saves. See gradpath.backends.diagnostics.hessian_operator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import array_api_compat.torch as xp
import numpy as np
import torch

from gradpath.backends.losses import term_losses
from gradpath.problems.core import Problem


def hessian_matmat(problem: Problem, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray,
                   batch: Sequence[np.ndarray], weights: np.ndarray, keys: Sequence[str], *,
                   index: int | None, net: str, gate: str,
                   dtype: str) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """``(n, matmat)``: the Hessian of ``weights[index] * L_index`` (or of sum_i weights_i L_i if
    ``index`` is None) w.r.t. the parameters ``keys``, as ``V (n, k) -> H V (n, k)`` in float64 numpy."""
    dt = getattr(torch, dtype)
    put = lambda a: torch.as_tensor(np.array(a), dtype=dt)  # noqa: E731  (a copy: no shared memory)
    fixed = {k: put(v) for k, v in params.items() if k not in keys}
    shapes = [tuple(np.shape(params[k])) for k in keys]
    sizes = [int(np.prod(s)) for s in shapes]
    x0 = put(np.concatenate([np.ravel(params[k]) for k in keys]))
    pts, m, s, w = [put(b) for b in batch], put(mu), put(sigma), put(weights)

    def loss(x):
        p = dict(fixed)
        p.update({k: torch.reshape(part, shape) for k, part, shape in zip(keys, torch.split(x, sizes), shapes)})
        losses = term_losses(xp, problem, p, pts, m, s, net=net, gate=gate)
        return torch.dot(w, losses) if index is None else w[index] * losses[index]

    grad = torch.func.grad(loss)

    def hvp(v):
        return torch.func.jvp(grad, (x0,), (v,))[1]

    block = torch.func.vmap(hvp, in_dims=1, out_dims=1)

    def matmat(v: np.ndarray) -> np.ndarray:
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")  # no TF32 on GPUs, as in the trainer
        try:
            return block(put(v)).numpy().astype(np.float64)
        finally:
            torch.set_float32_matmul_precision(precision)

    return int(x0.shape[0]), matmat
