"""Hessian-vector products of a PINN loss with PyTorch: forward-over-reverse (``torch.func.jvp`` of ``grad``).

The loss and its flattening are gradpath.backends.diagnostics.flat_loss, shared with jax, so
both backends give the same operator (tests/test_diagnostics.py). Products with a block of
vectors are ``vmap``-ed; they run eagerly: an operator is used for tens of products (Lanczos) or
one dense pass, where compiling would cost more than it saves. Reached through the registry as
``TorchBackend.hessian_matmat`` (see gradpath.backends.diagnostics.hessian_operator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import array_api_compat.torch as xp
import numpy as np
import torch

from gradpath.backends.diagnostics import flat_loss, flat_parameters
from gradpath.problems.core import Problem


def hessian_matmat(problem: Problem, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray,
                   batch: Sequence[np.ndarray], weights: np.ndarray, keys: Sequence[str], *,
                   index: int | None, net: str, gate: str,
                   dtype: str) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """See gradpath.backends.protocol.HessianMatmat."""
    dt = getattr(torch, dtype)
    put = lambda a: torch.as_tensor(np.array(a), dtype=dt)  # noqa: E731  (a copy: no shared memory)
    x0, shapes, fixed = flat_parameters(params, keys)
    x0 = put(x0)
    args = ({k: put(v) for k, v in fixed.items()}, [put(b) for b in batch], put(mu), put(sigma), put(weights))
    loss = flat_loss(xp, problem, tuple(keys), shapes, index=index, net=net, gate=gate,
                     split=torch.tensor_split)
    grad = torch.func.grad(lambda x: loss(x, *args))

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
