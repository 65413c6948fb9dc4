"""Per-term losses of a problem for given network parameters, written once over ``xp``.

The input derivatives come from gradpath's forward-mode jets (gradpath.backends.jets) unless a
backend passes its own ``input_derivatives`` (a :data:`Derivatives`, e.g. nested autodiff of its
framework): the loss itself is then still this code's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradpath.backends.jets import network_jets
from gradpath.problems.core import Problem, parse_derivative

# (xp, problem, params, x, mu, sigma, keys, *, net, gate) -> {key: (n,) array}: see :func:`derivatives`
Derivatives = Callable[..., dict[str, Any]]


def derivatives(xp: Any, problem: Problem, params: dict, x: Any, mu: Any, sigma: Any,
                keys: tuple[str, ...], *, net: str, gate: str) -> dict[str, Any]:
    """The derivative keys of ``problem`` (e.g. ``"u_xx"``) at ``x`` as ``{key: (n,) array}``."""
    requested = [parse_derivative(k, problem.inputs, problem.outputs) for k in keys]
    values = network_jets(xp, params, x, mu, sigma, requested, net=net, gate=gate)
    return dict(zip(keys, values))


def term_losses(xp: Any, problem: Problem, params: dict, batches: list, mu: Any, sigma: Any,
                *, net: str, gate: str, input_derivatives: Derivatives = derivatives) -> Any:
    """Unweighted losses of every term, shape ``(n_terms,)``.

    Args:
        batches: one array per term of shape ``(n_regions, batch, d)``: each region's points.
        input_derivatives: how the network's input derivatives are computed (default: the jets).

    A term's loss is ``scale * sum over regions and misfit components of mean(misfit**2)``
    (see gradpath.problems.core.Term).
    """
    return xp.stack([term_loss(xp, problem, i, params, points, mu, sigma, net=net, gate=gate,
                               input_derivatives=input_derivatives)
                     for i, points in enumerate(batches)])


def term_loss(xp: Any, problem: Problem, index: int, params: dict, points: Any, mu: Any, sigma: Any,
              *, net: str, gate: str, input_derivatives: Derivatives = derivatives) -> Any:
    """The unweighted loss of term ``index`` alone on its points ``(n_regions, batch, d)`` (a scalar).

    Its own function so that per-term gradients (the lambda update) differentiate one term's
    graph each, instead of back-propagating zeros through the others.
    """
    term = problem.terms()[index]
    regions, batch, dim = points.shape
    x = xp.reshape(points, (regions * batch, dim))
    components = term_misfits(xp, problem, index, params, x, mu, sigma, net=net, gate=gate,
                              input_derivatives=input_derivatives)
    loss = 0.0
    for c in components:
        loss = loss + xp.sum(xp.mean(xp.reshape(c * c, (regions, batch)), axis=1))
    return term.scale * loss if term.scale != 1.0 else loss


def term_misfits(xp: Any, problem: Problem, index: int, params: dict, x: Any, mu: Any, sigma: Any,
                 *, net: str, gate: str, input_derivatives: Derivatives = derivatives) -> tuple[Any, ...]:
    """The pointwise misfit of term ``index`` at ``x`` ``(n, d)``: one ``(n,)`` array per misfit component
    (the PDE residual for a residual term, u - g for a boundary or initial term), unscaled.

    :func:`term_loss` squares and averages these; the NTK trace weights differentiate them point by
    point (gradpath.backends.step.Step.ntk_traces).
    """
    term = problem.terms()[index]
    d = input_derivatives(xp, problem, params, x, mu, sigma, term.needs, net=net, gate=gate)
    misfit = term.misfit(xp, x, d)
    return misfit if isinstance(misfit, tuple) else (misfit,)
