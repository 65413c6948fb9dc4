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

Two later rules sit beside them, each reading something else than the per-term gradients
(``Weighting.needs``):

- ``relobralo`` (Bischof & Kraus, arXiv 2110.09813, 2021, Sec. 3, Eqs. 9-11): the term losses
  only. lambda_hat_i(t; t') = m softmax_i(L_i(t) / (T L_i(t'))), and
  lambda(t) = a' (rho lambda(t-1) + (1 - rho) lambda_hat(t; 0)) + (1 - a') lambda_hat(t; t-1)
  with rho a Bernoulli draw of mean E[rho]. The published defaults: a' = 0.999, E[rho] = 0.999,
  T = 0.1. Here ``alpha`` is the weight of the *new* estimate, as for every rule, so alpha =
  1 - a' = 0.001 (``--anneal-alpha`` overrides it in that sense). Every term is weighted,
  the residual too, at every step (``every=1``: ``anneal_every`` does not apply). With the
  harness's timing the losses of step t (before its update) give the lambdas used from step t+1.
- ``ntk`` (Wang, Yu & Perdikaris, J. Comput. Phys. 449, 110768, 2022, Algorithm 1, Eq. 6.5):
  lambda_i = (sum_j tr K_jj) / tr K_ii, every term, from the traces of the NTK blocks
  tr K_ii = sum over the term's points of |d r_i(x_k) / d theta|^2 (gradpath.backends.step.Step.ntk_traces),
  updated every ``anneal_every`` steps (the paper's N) and, as in Algorithm 1, without a moving
  average (alpha = 1).
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


RELOBRALO_TEMPERATURE = 0.1  # Bischof & Kraus 2021, Sec. 4 (published default T)
RELOBRALO_LOOKBACK = 0.999  # E[rho], ibid.
RELOBRALO_ALPHA = 1 - 0.999  # their alpha = 0.999 is the weight of the history; ours weighs the new estimate


def _softmax_ratio(xp, losses, reference):
    """m softmax_i(L_i(t) / (T L_i(t'))) (Bischof & Kraus 2021, Eq. 9); the max is subtracted
    before exp only to keep exp finite, which leaves the softmax unchanged."""
    z = losses / (RELOBRALO_TEMPERATURE * reference)
    e = xp.exp(z - xp.max(z))
    return losses.shape[0] * e / xp.sum(e)


def _trace_ratio(xp, traces):
    """sum_j tr K_jj / tr K_ii for every term (Wang, Yu & Perdikaris 2022, Eq. 6.5)."""
    return xp.sum(traces) / traces


@dataclass(frozen=True)
class Weighting:
    """An annealing rule: lambda <- (1 - alpha) * lambda + alpha * lambda_hat.

    Attributes:
        name: registry name (``code``, ``paper``, ...).
        estimate: lambda_hat, by what the rule ``needs``: ``"gradients"``:
            ``estimate(xp, grads, lambdas, keys) -> list of n_terms scalars``; ``"losses"``:
            ``estimate(xp, losses, reference_losses) -> (n_terms,)``; ``"ntk"``:
            ``estimate(xp, traces) -> (n_terms,)``.
        alpha: EMA weight of the new estimate.
        params: ``"weights"`` (MLP weight matrices only, as the authors) or ``"all"`` (gradient rules).
        description: one line for ``gradpath list``.
        needs: what the rule reads: ``"gradients"`` (each term's parameter gradients, :meth:`update`),
            ``"losses"`` (the term losses now, one update ago and at step 0, plus a Bernoulli
            lookback draw, :meth:`balance`) or ``"ntk"`` (the traces of the NTK blocks, :meth:`from_traces`).
        every: steps between updates fixed by the rule itself (None: the run's ``anneal_every``).
        lookback: E[rho] of the Bernoulli lookback draw (``"losses"`` rules).
    """

    name: str
    estimate: Callable[..., Any]
    alpha: float
    params: str
    description: str
    needs: str = "gradients"
    every: int | None = None
    lookback: float | None = None

    def update(self, xp: Any, grads: Grads, lambdas: Any, alpha: float | None = None) -> Any:
        """New loss weights ``(n_terms,)`` from the per-term gradients at the current parameters."""
        keys = weight_keys(grads[0]) if self.params == "weights" else sorted(grads[0])
        a = self.alpha if alpha is None else alpha
        lam_hat = xp.stack(self.estimate(xp, grads, lambdas, keys))
        return (1 - a) * lambdas + a * lam_hat

    def balance(self, xp: Any, losses: Any, previous: Any, initial: Any, lambdas: Any, rho: Any,
                alpha: float | None = None) -> Any:
        """New loss weights ``(n_terms,)`` of a ``"losses"`` rule (ReLoBRaLo, Bischof & Kraus 2021, Eq. 11).

        Args:
            losses, previous, initial: the unweighted term losses L(t), L(t-1) and L(0).
            lambdas: the weights lambda(t-1).
            rho: the lookback draw (0 or 1): 1 keeps lambda(t-1), 0 looks back to L(0).
            alpha: weight of the new estimate lambda_hat(t; t-1) (None: the rule's).
        """
        a = self.alpha if alpha is None else alpha
        history = rho * lambdas + (1 - rho) * self.estimate(xp, losses, initial)
        return (1 - a) * history + a * self.estimate(xp, losses, previous)

    def from_traces(self, xp: Any, traces: Any, lambdas: Any, alpha: float | None = None) -> Any:
        """New loss weights ``(n_terms,)`` of an ``"ntk"`` rule from the NTK block traces ``(n_terms,)``."""
        a = self.alpha if alpha is None else alpha
        return (1 - a) * lambdas + a * self.estimate(xp, traces)


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
    Weighting("relobralo", _softmax_ratio, RELOBRALO_ALPHA, "all",
              "ReLoBRaLo (Bischof & Kraus 2021): losses only, m softmax(L(t) / (T L(t'))), T 0.1, "
              "EMA 0.999 on the history, Bernoulli lookback to L(0) (E[rho] 0.999), every term, every step",
              needs="losses", every=1, lookback=RELOBRALO_LOOKBACK),
    Weighting("ntk", _trace_ratio, 1.0, "all",
              "NTK trace weights (Wang, Yu & Perdikaris 2022): sum_j tr K_jj / tr K_ii from per-point "
              "Jacobians, every term, every anneal_every steps, no EMA",
              needs="ntk"),
)}


def get_weighting(name: str) -> Weighting:
    """The annealing rule called ``name``."""
    if name not in WEIGHTINGS:
        raise unknown_choice("weighting variant", name, WEIGHTINGS)
    return WEIGHTINGS[name]
