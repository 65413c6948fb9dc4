"""Loss-weight annealing rules (Algorithm 1 and the variants implementations actually use).

Each rule is data: a function giving the new estimate lambda_hat from the per-term gradients,
the EMA weight ``alpha`` of that estimate, and which parameters enter the statistics. Rules are
written once over ``xp`` and run inside each backend's compiled step. See
``shared/spec/weighting-variants.md``; lambda_0 (the residual's weight) stays 1 except for
``grad-norm``, which balances every term.

Note:
    The paper's Algorithm 1 (``paper``) and the authors' code (``code``, the default) differ:
    the code puts EMA weight 0.9 on the *old* lambda, divides by the gradient of the
    lambda-weighted loss (fixed point lambda = sqrt(r) instead of r), uses weight matrices only
    and averages per-layer means. The paper's numbers come from the code (spec 3.2).
    Every variant runs with the code's timing: lambda_hat from the gradients *after* the step,
    on the same batch, used from the next step on; Algorithm 1 as printed computes it before
    the step and uses it in that step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradpath.backends.init import weight_keys
from gradpath.problems.errors import unknown_choice

Grads = list[dict[str, Any]]  # one gradient dict per term, residual first


def _abs_max(xp, g, keys):
    return xp.max(xp.stack([xp.max(xp.abs(g[k])) for k in keys]))


def _global_mean_abs(xp, g, keys):
    total = sum(xp.sum(xp.abs(g[k])) for k in keys)
    return total / sum(math.prod(g[k].shape) for k in keys)  # every entry counts equally


def _code(xp, grads, lam, keys):
    numerator = _abs_max(xp, grads[0], keys)  # max of per-layer maxima = global max over W
    # mean of per-layer means of |grad(lambda_i L_i)|: each layer counts equally, whatever its size
    return [lam[i] * 0 + 1 if i == 0 else
            numerator / (lam[i] * xp.mean(xp.stack([xp.mean(xp.abs(g[k])) for k in keys])))
            for i, g in enumerate(grads)]


def _code_global(xp, grads, lam, keys):
    numerator = _abs_max(xp, grads[0], keys)
    # the code's rule, the paper's statistics: one mean over every entry of the keys given
    return [lam[0] * 0 + 1] + [numerator / (lam[i] * _global_mean_abs(xp, g, keys))
                               for i, g in enumerate(grads[1:], start=1)]


def _code_cavity(xp, grads, lam, keys):
    out = [lam[0] * 0 + 1]
    for i, g in enumerate(grads[1:], start=1):  # per-layer ratio, then the max over layers
        ratios = [xp.max(xp.abs(grads[0][k])) / (lam[i] * xp.mean(xp.abs(g[k]))) for k in keys]
        out.append(xp.max(xp.stack(ratios)))
    return out


def _paper(xp, grads, lam, keys):
    numerator = _abs_max(xp, grads[0], keys)
    return [lam[0] * 0 + 1] + [numerator / _global_mean_abs(xp, g, keys) for g in grads[1:]]


def _mean(xp, grads, lam, keys):
    numerator = _global_mean_abs(xp, grads[0], keys)
    return [lam[0] * 0 + 1] + [numerator / _global_mean_abs(xp, g, keys) for g in grads[1:]]


def _grad_norm(xp, grads, lam, keys):
    norms = [xp.sqrt(sum(xp.sum(g[k] * g[k]) for k in keys)) for g in grads]
    mean = sum(norms) / len(norms)
    return [mean / n for n in norms]


@dataclass(frozen=True)
class Weighting:
    """An annealing rule: lambda <- (1 - alpha) * lambda + alpha * lambda_hat.

    Attributes:
        name: registry name (``code``, ``paper``, ...).
        estimate: ``estimate(xp, grads, lambdas, keys) -> list of n_terms scalars`` (lambda_hat).
        alpha: EMA weight of the new estimate.
        params: ``"weights"`` (MLP weight matrices only, as the authors) or ``"all"``.
        description: one line for ``gradpath list``.
    """

    name: str
    estimate: Callable[..., list]
    alpha: float
    params: str
    description: str

    def update(self, xp: Any, grads: Grads, lambdas: Any, alpha: float | None = None) -> Any:
        """New loss weights ``(n_terms,)`` from the per-term gradients at the current parameters."""
        keys = weight_keys(grads[0]) if self.params == "weights" else sorted(grads[0])
        a = self.alpha if alpha is None else alpha
        lam_hat = xp.stack(self.estimate(xp, grads, lambdas, keys))
        return (1 - a) * lambdas + a * lam_hat


WEIGHTINGS: dict[str, Weighting] = {w.name: w for w in (
    Weighting("code", _code, 0.1, "weights",
              "authors' code (Helmholtz, KG): max|grad L_r| / mean of layer means |grad(lambda L_i)|, EMA 0.1, W only"),
    Weighting("paper", _paper, 0.9, "all",
              "Algorithm 1 as printed: max|grad L_r| / mean|grad L_i| over all parameters, EMA 0.9 on the new value"),
    Weighting("code-global", _code_global, 0.1, "all",
              "the code's rule over Algorithm 1's statistics: max|grad L_r| / (lambda * mean|grad L_i|), "
              "one mean over all parameters, EMA 0.1 (isolates the code's aggregation in ablations)"),
    Weighting("code-cavity", _code_cavity, 0.1, "weights",
              "authors' cavity code: max over layers of max|grad L_r| / mean|grad(lambda L_i)|, EMA 0.1, W only"),
    Weighting("mean", _mean, 0.1, "all",
              "mean|grad L_r| / mean|grad L_i| over all parameters (PINN-LA-2, ReLoBRaLo's LRA), EMA 0.1"),
    Weighting("grad-norm", _grad_norm, 0.1, "all",
              "L2 grad-norm balancing of every term, residual included: mean_j |grad L_j| / |grad L_i|, EMA 0.1"),
)}


def get_weighting(name: str) -> Weighting:
    """The annealing rule called ``name``."""
    if name not in WEIGHTINGS:
        raise unknown_choice("weighting variant", name, WEIGHTINGS)
    return WEIGHTINGS[name]
