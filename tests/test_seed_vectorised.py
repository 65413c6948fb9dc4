"""Seed-vectorised training: n seeds in one program give each seed's own run, per seed."""

from __future__ import annotations

import numpy as np
import pytest

from gradpath.backends import get_backend, training
from gradpath.backends.settings import TrainSettings
from gradpath.backends.training import check_same_but_seed, train, train_seeds
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError
from gradpath.suite.campaigns.definition import expand, parse_campaign
from gradpath.suite.campaigns.schedule import run_campaign, seed_groups
from gradpath.suite.campaigns.executors import make_executor
from gradpath.suite.runs.store import Store, gather

# float64 so that "the same up to rounding" can be checked tightly; eager torch keeps the test short
TINY = dict(steps=30, log_every=10, width=10, depth=2, dtype="float64", compile=False)


def _assert_same_run(a, b, rtol=1e-9):
    """Two TrainResults agree row by row (losses, weights, metrics) and in their final parameters
    (each parameter array to ``rtol`` of its largest entry: float32 rounding hits small entries hardest)."""
    assert len(a.history) == len(b.history)
    for ra, rb in zip(a.history, b.history):
        assert ra.keys() == rb.keys()
        for k in ra:
            if k != "seconds":
                np.testing.assert_allclose(ra[k], rb[k], rtol=rtol, atol=1e-13, err_msg=k)
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert np.max(np.abs(a.params[k] - b.params[k])) <= rtol * np.max(np.abs(b.params[k])), k
    for k in ("steps", "error", "diverged", "diverged_at_step"):
        assert a.summary[k] == pytest.approx(b.summary[k], rel=rtol) if isinstance(a.summary[k], float) \
            else a.summary[k] == b.summary[k]


@pytest.mark.parametrize("problem_name,method", [("poisson1d", "M4"), ("klein-gordon", "M2")])
def test_each_seed_of_a_vectorised_run_is_its_own_run(backend, problem_name, method):
    problem = get_problem(problem_name)
    settings = [TrainSettings(method=method, seed=s, **TINY) for s in (7, 0)]
    together = train_seeds(problem, settings, backend)
    assert [r.summary["vectorised_seeds"] for r in together] == [2, 2]
    for s, result in zip(settings, together):
        _assert_same_run(result, train(problem, s, backend))
    # and the seeds really differ: nothing was shared between lanes
    assert together[0].history[-1]["loss_residual"] != together[1].history[-1]["loss_residual"]


def test_jax_float32_vectorised_matches_separate_runs_to_rounding():
    pytest.importorskip("jax")
    problem = get_problem("helmholtz")
    settings = [TrainSettings(method="M4", seed=s, steps=40, log_every=20) for s in (0, 1)]
    for result, s in zip(train_seeds(problem, settings, "jax"), settings):
        _assert_same_run(result, train(problem, s, "jax"), rtol=2e-4)


class _PoisonLane:
    """Wraps a backend so that lane ``lane`` starts from NaN weights: that seed diverges at once."""

    def __init__(self, inner, lane: int) -> None:
        self.inner, self.lane = inner, lane
        self.supports_lanes = True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def trainer(self, problem, settings, device, lanes=None):
        trainer = self.inner.trainer(problem, settings, device, lanes)
        init, lane = trainer.init, self.lane

        def poisoned(params, mu, sigma):
            params = {k: v.copy() for k, v in params.items()}
            params["W0"][lane] = np.nan
            return init(params, mu, sigma)

        trainer.init = poisoned
        return trainer


def test_a_diverging_seed_stops_alone(backend, monkeypatch):
    problem = get_problem("poisson1d")
    settings = [TrainSettings(method="M2", seed=s, **TINY) for s in (0, 1, 2)]
    poisoned = _PoisonLane(get_backend(backend), lane=1)
    monkeypatch.setattr(training, "get_backend", lambda name: poisoned)
    rows: list[tuple[int, int]] = []
    results = train_seeds(problem, settings, backend, lambda i, row: rows.append((i, row["step"])))
    monkeypatch.undo()
    assert results[1].summary["diverged"] and results[1].summary["diverged_at_step"] == 0
    assert results[1].summary["steps"] == 1 and len(results[1].history) == 1
    assert [step for i, step in rows if i == 1] == [1]  # logged once, then no more
    for i in (0, 2):
        assert not results[i].summary["diverged"]
        _assert_same_run(results[i], train(problem, settings[i], backend))


def test_seeds_one_after_the_other_are_their_own_runs_and_log_under_their_index():
    """vectorise=False (and any backend without lanes) trains the seeds in turn: each result is
    exactly its own train() run, and on_log still names each row's seed by its index."""
    problem = get_problem("poisson1d")
    settings = [TrainSettings(seed=s, method="M2", **TINY) for s in (3, 4)]
    logged = []
    results = train_seeds(problem, settings, "jax", lambda i, row: logged.append((i, row["step"])), vectorise=False)
    assert logged == [(0, 10), (0, 20), (0, 30), (1, 10), (1, 20), (1, 30)]
    for s, result in zip(settings, results):
        assert result.summary["vectorised_seeds"] == 1
        _assert_same_run(result, train(problem, s, "jax"), rtol=0)


def test_seeds_trained_together_must_share_everything_else():
    with pytest.raises(UsageError, match="these differ: lr, method"):
        check_same_but_seed([TrainSettings(seed=0), TrainSettings(seed=1, method="M2", lr=1e-2)])
    with pytest.raises(UsageError, match="must differ"):
        check_same_but_seed([TrainSettings(seed=1), TrainSettings(seed=1)])


def _specs(seeds, methods=("M1",), backends=("jax",)):
    return expand(parse_campaign({"grid": {"problem": ["poisson1d"], "method": list(methods), "seed": list(seeds),
                                           "backend": list(backends)},
                                  "settings": {k: v for k, v in TINY.items()}}, "test"))


def test_seed_groups_split_by_configuration_and_size():
    specs = _specs(range(5), methods=("M1", "M2"))
    groups = seed_groups(specs, lanes=2)
    assert [len(g) for g in groups] == [2, 2, 1, 2, 2, 1]
    for group in groups:
        assert len({s.config["settings"]["method"] for s in group}) == 1
        assert len({s.config["settings"]["seed"] for s in group}) == len(group)
    assert sorted(s.key for g in groups for s in g) == sorted(s.key for s in specs)
    assert [len(g) for g in seed_groups(specs, lanes=1)] == [1] * 10


def test_a_vectorised_campaign_stores_the_runs_of_a_sequential_one(tmp_path, backend):
    specs = _specs((0, 1, 2), backends=(backend,))
    errors = {}
    for lanes in (1, 3):
        store = Store(tmp_path / f"lanes{lanes}")
        executor = make_executor("local", jobs=1)
        try:
            result = run_campaign(specs, store, executor, quiet=True, lanes=lanes)
        finally:
            executor.close()
        assert result.counts["complete"] == 3
        runs, history = gather(store)
        assert set(runs["vectorised_seeds"]) == {lanes}
        # campaign runs record gradients too (the last step here), each seed in its own record
        assert all((store.path(s) / "gradients.npz").is_file() for s in specs)
        assert history.filter(like="grad_max_residual").iloc[-1].notna().all()
        errors[lanes] = runs.set_index("key").loc[[s.key for s in specs], "error"].to_numpy()
    np.testing.assert_allclose(errors[3], errors[1], rtol=1e-9)


def test_stacked_seed_starts_keep_each_seeds_own_arrays():
    """Lane i of the stacked initial arrays is seed i's start; the seeds differ, and one seed is not stacked."""
    from gradpath.backends.data import initial_arrays, seed_start

    problem = get_problem("klein-gordon")
    starts = [seed_start(problem, TrainSettings(method="M3", seed=s, **TINY)) for s in (0, 1, 2)]
    params, mu, sigma = initial_arrays(starts, lanes=3)
    for i, start in enumerate(starts):
        assert all(np.array_equal(params[k][i], start.params[k]) for k in start.params)
        assert np.array_equal(mu[i], start.mu) and np.array_equal(sigma[i], start.sigma)
    assert not np.array_equal(params["W0"][0], params["W0"][1]) and not np.array_equal(mu[0], mu[1])
    one = initial_arrays(starts[:1], lanes=None)
    assert one[0] is starts[0].params and one[0]["W0"].shape == starts[0].params["W0"].shape
    with pytest.raises(ValueError, match="lanes=3"):
        initial_arrays(starts, lanes=None)  # several seeds need a trainer with lanes
    with pytest.raises(ValueError, match="one seed per lane"):
        initial_arrays(starts, lanes=2)
