"""How a term's loss adds up (gradpath.problems.core.Term, gradpath.backends.losses): checked by hand on constant networks.

Both backends call gradpath.backends.losses, so the equivalence tests cannot see a change to it; these
tests pin the convention itself: scale * sum over regions of mean(misfit**2), one batch per region,
with the regions of the authors' code.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradpath.backends.data import draw_batches
from gradpath.backends.init import init_params
from gradpath.backends.losses import term_losses
from gradpath.problems import get_problem


def _constant_network(problem, value: float) -> dict[str, np.ndarray]:
    """A plain MLP of the problem's shape whose every output is ``value`` everywhere (all derivatives 0)."""
    params = init_params(problem.layers, "mlp", np.random.default_rng(0))
    params = {k: np.zeros_like(v, dtype=np.float64) for k, v in params.items()}
    last = max(k for k in params if k.startswith("b"))
    params[last][:] = value
    return params


def _losses(problem, params, batches):
    mu, sigma = np.zeros(len(problem.inputs)), np.ones(len(problem.inputs))
    return np.asarray(term_losses(np, problem, params, batches, mu, sigma, net="mlp", gate="code"))


@pytest.mark.parametrize("name, regions", [("helmholtz", [1, 4]), ("klein-gordon", [1, 1, 2]),
                                           ("cavity", [1, 4])])
def test_each_term_draws_from_the_regions_of_the_authors_code(name, regions):
    problem = get_problem(name)
    assert [len(t.regions) for t in problem.terms()] == regions
    batches = draw_batches(problem, np.random.default_rng(0), 1, 16, "float64")
    assert [b.shape[1:3] for b in batches] == [(n, 16) for n in regions]  # (steps, regions, batch, dim)


def test_helmholtz_losses_by_hand():
    problem = get_problem("helmholtz")
    c = 0.5
    residual, edges = (b[0] for b in draw_batches(problem, np.random.default_rng(1), 1, 32, "float64"))
    loss = _losses(problem, _constant_network(problem, c), [residual, edges])
    # u = c: u_xx = u_yy = 0, so the residual is k^2 c - q; the exact solution vanishes on every edge,
    # so each of the four edge means is c^2 and they add up under one lambda
    q = problem.forcing(np, residual[0])
    assert loss[0] == pytest.approx(np.mean((problem.k**2 * c - q) ** 2), rel=1e-12)
    assert loss[1] == pytest.approx(4 * c**2, rel=1e-12)


def test_klein_gordon_losses_by_hand():
    problem = get_problem("klein-gordon")
    c = 0.3
    residual, initial, walls = (b[0] for b in draw_batches(problem, np.random.default_rng(2), 1, 32, "float64"))
    loss = _losses(problem, _constant_network(problem, c), [residual, initial, walls])
    f = problem.forcing(np, residual[0])
    assert loss[0] == pytest.approx(np.mean((problem.beta * c + problem.gamma * c**problem.k - f) ** 2), rel=1e-12)
    # MSE(u - u0) + MSE(u_t): u_t = 0 for a constant network
    u0 = problem.exact(np, initial[0])["u"]
    assert loss[1] == pytest.approx(np.mean((c - u0) ** 2), rel=1e-12)
    # the two walls x = 0 and x = 1: one mean each, added
    assert loss[2] == pytest.approx(sum(np.mean((c - problem.exact(np, wall)["u"]) ** 2) for wall in walls),
                                    rel=1e-12)


@pytest.mark.parametrize("form, boundary", [("psi-p", 0.5), ("u-v-p", 1.0)])
def test_cavity_boundary_loss_by_hand(form, boundary):
    """At rest (all outputs 0) only the lid misses, by u = 1 on its whole batch: a mean of 1, times
    the term's scale (the authors' 1/2 in the stream-function form)."""
    problem = get_problem("cavity", form=form)
    batches = [b[0] for b in draw_batches(problem, np.random.default_rng(3), 1, 32, "float64")]
    loss = _losses(problem, _constant_network(problem, 0.0), batches)
    assert loss[0] == 0.0  # at rest with zero pressure the Navier-Stokes residual vanishes
    assert loss[1] == pytest.approx(boundary, rel=1e-12)
