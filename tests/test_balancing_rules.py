"""The loss-balancing rules beyond the paper: ReLoBRaLo and the NTK trace weights (issue 21).

Golden values come straight from the published formulas, evaluated here in plain numpy:
ReLoBRaLo from Bischof & Kraus (arXiv 2110.09813, 2021), Eqs. 9-11; the NTK traces from Wang,
Yu & Perdikaris (J. Comput. Phys. 449, 110768, 2022), Eq. 6.5, with each point's parameter
gradient taken by central finite differences of the numpy misfit. Then both backends' trainers
must agree draw for draw (float64), one seed and two seeds at once (lanes), and a stopped
ReLoBRaLo run must resume bit for bit with its loss history in the checkpoint.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradpath.backends import get_backend
from gradpath.backends.data import draw_batches, initial_arrays, lookback_draws, lookback_key, seed_start
from gradpath.backends.losses import term_misfits
from gradpath.backends.replay import replay
from gradpath.backends.settings import TrainSettings
from gradpath.backends.weighting import RELOBRALO_LOOKBACK, get_weighting
from gradpath.problems import get_problem

BACKENDS = ("jax", "torch")


# -- ReLoBRaLo, by hand ---------------------------------------------------------------------------
def _relobralo_by_hand(L, L_prev, L0, lam, rho, alpha=0.999, T=0.1):
    """Bischof & Kraus 2021, Eqs. 9-11, term by term with math.exp (no max shift)."""
    m = len(L)

    def hat(ref):
        e = [math.exp(L[i] / (T * ref[i])) for i in range(m)]
        return [m * e[i] / sum(e) for i in range(m)]

    h0, hp = hat(L0), hat(L_prev)
    return [alpha * (rho * lam[i] + (1 - rho) * h0[i]) + (1 - alpha) * hp[i] for i in range(m)]


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_relobralo_matches_the_published_formula(rho):
    L, L_prev, L0, lam = [0.5, 0.2, 0.03], [0.6, 0.1, 0.03], [2.0, 0.4, 0.01], [1.3, 0.9, 0.8]
    got = get_weighting("relobralo").balance(np, np.array(L), np.array(L_prev), np.array(L0), np.array(lam), rho)
    np.testing.assert_allclose(got, _relobralo_by_hand(L, L_prev, L0, lam, rho), rtol=1e-13)


def test_relobralo_two_terms_by_hand():
    # L = (1, 2), L(t-1) = (1, 1): lambda_hat(t; t-1) = 2 * softmax(10, 20) = 2 / (1 + e^-10), 2 / (1 + e^10) (swapped order)
    # L(0) = (1, 2): lambda_hat(t; 0) = 2 * softmax(10, 10) = (1, 1); rho = 0 looks back to it
    got = get_weighting("relobralo").balance(np, np.array([1.0, 2.0]), np.array([1.0, 1.0]), np.array([1.0, 2.0]),
                                             np.array([5.0, 5.0]), 0.0)
    hp = [2 / (1 + math.exp(10)), 2 / (1 + math.exp(-10))]
    np.testing.assert_allclose(got, [0.999 + 0.001 * hp[0], 0.999 + 0.001 * hp[1]], rtol=1e-14)


def test_relobralo_is_in_the_registry_as_data():
    w = get_weighting("relobralo")
    assert (w.needs, w.every, w.lookback, w.alpha) == ("losses", 1, 0.999, pytest.approx(0.001))
    assert get_weighting("ntk").needs == "ntk" and get_weighting("ntk").alpha == 1.0  # Algorithm 1: no EMA
    assert get_weighting("code").needs == "gradients"


def test_lookback_draws_are_counter_based_and_per_seed():
    key = lookback_key(seed_start(get_problem("poisson1d"), TrainSettings(seed=3)).params)
    whole = lookback_draws(key, 0, 5000, RELOBRALO_LOOKBACK)
    parts = np.concatenate([lookback_draws(key, 0, 1234, RELOBRALO_LOOKBACK),
                            lookback_draws(key, 1234, 3766, RELOBRALO_LOOKBACK)])
    np.testing.assert_array_equal(whole, parts)  # independent of the chunking (and of a resume)
    assert set(np.unique(whole)) <= {0.0, 1.0}
    mean = lookback_draws(key, 0, 200_000, 0.5).mean()
    assert abs(mean - 0.5) < 0.005
    other = lookback_key(seed_start(get_problem("poisson1d"), TrainSettings(seed=4)).params)
    assert not np.array_equal(key, other)
    both = lookback_draws(np.stack([key, other]), 7, 100, 0.5)
    np.testing.assert_array_equal(both[1], lookback_draws(other, 7, 100, 0.5))


# -- NTK traces, by hand --------------------------------------------------------------------------
def test_ntk_traces_match_finite_differences():
    problem = get_problem("poisson1d")
    settings = TrainSettings(method="M2", weighting="ntk", width=3, depth=1, dtype="float64", batch_size=4,
                             compile=False)
    start = seed_start(problem, settings)
    batch = [b[0] for b in draw_batches(problem, start.batches, 1, 4, "float64")]
    params, mu, sigma = start.params, start.mu, start.sigma

    def misfit(i, p, x):  # the term's pointwise misfit, all components, at points x (n, d), in numpy
        return np.concatenate(term_misfits(np, problem, i, p, x, mu, sigma, net="mlp", gate="code"))

    want = []
    for i, points in enumerate(batch):
        x = points.reshape(-1, points.shape[-1])
        total, h = 0.0, 1e-5
        for k, v in params.items():
            for idx in np.ndindex(v.shape):
                up, down = dict(params), dict(params)
                up[k], down[k] = v.copy(), v.copy()
                up[k][idx] += h
                down[k][idx] -= h
                d = (misfit(i, up, x) - misfit(i, down, x)) / (2 * h)  # d r(x_k) / d theta_j, every point k
                total += float(np.sum(d * d))
        want.append(problem.terms()[i].scale * total)  # the trace of sqrt(scale) r: the loss's own factor
    want = np.array(want)
    for backend in BACKENDS:
        trainer = get_backend(backend).trainer(problem, settings, "cpu")
        state = trainer.init(params, mu, sigma)
        traces = trainer.rule.ntk_traces(state["params"], [trainer._array(b) for b in batch], state["norm"])
        got = np.asarray(traces.cpu() if hasattr(traces, "cpu") else traces, np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-7, err_msg=backend)
        lam = get_weighting("ntk").from_traces(np, got, np.ones(2))
        np.testing.assert_allclose(lam, [want.sum() / want[0], want.sum() / want[1]], rtol=1e-7)


# -- both backends, step for step -----------------------------------------------------------------
def _settings(method, weighting, **kw):
    # ntk updates every anneal_every steps (5 here, so a short run sees several updates); relobralo
    # updates every step by definition and refuses another interval
    every = {} if get_weighting(weighting).every is not None else {"anneal_every": 5}
    values = dict(method=method, weighting=weighting, width=8, depth=2, batch_size=16, **every,
                  dtype="float64", compile=False, seed=1)
    values.update(kw)
    return TrainSettings(**values)


@pytest.mark.parametrize("method", ["M2", "M4"])
@pytest.mark.parametrize("weighting,steps", [("relobralo", 40), ("ntk", 12)])
def test_backends_agree_step_for_step(method, weighting, steps):
    problem = get_problem("poisson1d")
    settings = _settings(method, weighting)
    jax_run, torch_run = (replay(b, problem, settings, steps=steps) for b in BACKENDS)
    diff = torch_run.max_relative_difference(jax_run)
    assert diff["weights"] <= 1e-12 and max(diff.values()) <= 1e-9, diff
    assert np.ptp(jax_run.weights[1:], axis=0).max() > 0  # the weights do move


def _lanes_weights(backend, problem, settings, seeds, steps):
    starts = [seed_start(problem, settings.__class__(**{**settings.__dict__, "seed": s})) for s in seeds]
    lanes = len(seeds)
    trainer = get_backend(backend).trainer(problem, settings, "cpu", lanes=lanes)
    state = trainer.init(*initial_arrays(starts, lanes))
    per_seed = [draw_batches(problem, st.batches, steps, settings.batch_size, settings.dtype) for st in starts]
    batches = [np.stack([b[t] for b in per_seed]) for t in range(len(per_seed[0]))]
    half = steps // 2  # two chunks: the second continues the lookback stream where the first stopped
    state, first = trainer.train(state, [b[:, :half] for b in batches])
    state, second = trainer.train(state, [b[:, half:] for b in batches])
    return np.concatenate([first.weights, second.weights], axis=1)


@pytest.mark.parametrize("method", ["M2", "M4"])
@pytest.mark.parametrize("weighting,steps", [("relobralo", 30), ("ntk", 12)])
def test_two_seeds_at_once_agree_across_backends_and_with_single_runs(method, weighting, steps):
    problem = get_problem("poisson1d")
    settings = _settings(method, weighting)
    jax_w, torch_w = (_lanes_weights(b, problem, settings, (1, 2), steps) for b in BACKENDS)
    np.testing.assert_allclose(torch_w, jax_w, rtol=1e-12, atol=0)
    for lane, seed in enumerate((1, 2)):  # each lane is its own seed's run, lookback draws included
        alone = replay("jax", problem, _settings(method, weighting, seed=seed), steps=steps).weights
        np.testing.assert_allclose(jax_w[lane], alone, rtol=1e-12, atol=0)
    assert not np.allclose(jax_w[0], jax_w[1])


# -- state layout and resuming --------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_rule_state_only_where_the_rule_needs_it(backend):
    problem = get_problem("poisson1d")
    for weighting, extra in (("code", set()), ("ntk", set()),
                             ("relobralo", {"balance/initial", "balance/previous", "balance/key"})):
        settings = _settings("M2", weighting)
        trainer = get_backend(backend).trainer(problem, settings, "cpu")
        start = seed_start(problem, settings)
        snap = trainer.snapshot(trainer.init(start.params, start.mu, start.sigma))
        assert {k for k in snap if not k.startswith(("params/", "m/", "v/", "norm/"))} == {"weights", "count"} | extra


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seeds", [(1,), (1, 2)])
def test_a_stopped_relobralo_run_resumes_bit_for_bit(backend, seeds):
    from gradpath.backends.conformance import check_resumes, small_problem
    check_resumes(backend, small_problem("poisson1d"), method="M2", seeds=seeds, weighting="relobralo")


def test_a_rule_with_its_own_interval_refuses_anneal_every():
    """relobralo updates at every step by definition: another --anneal-every would name the same run twice."""
    from gradpath.backends.settings import TrainSettings
    from gradpath.problems.errors import UsageError

    TrainSettings(method="M2", weighting="relobralo")  # the default interval is accepted (and ignored)
    with pytest.raises(UsageError, match="--anneal-every does not apply to --weighting relobralo"):
        TrainSettings(method="M2", weighting="relobralo", anneal_every=20)
