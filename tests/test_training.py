"""The training loop in every backend: loss decreases, annealing timing, divergence, Adam."""

from __future__ import annotations

import numpy as np
import pytest

from gradpath.backends import get_backend
from gradpath.backends.adam import adam_update, learning_rate
from gradpath.backends.data import draw_batches, seed_start
from gradpath.backends.settings import TrainSettings
from gradpath.backends.training import train
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError


@pytest.mark.parametrize("method", ["M1", "M4"])
def test_a_few_hundred_steps_lower_the_loss_and_the_error(backend, method):
    problem = get_problem("poisson1d", C=2.0)
    settings = TrainSettings(method=method, steps=300, log_every=50, width=20, depth=2, lr=5e-3, compile=False)
    result = train(problem, settings, backend)
    first, last = result.history[0], result.history[-1]
    assert last["loss_residual"] + last["loss_boundary"] < 0.2 * (first["loss_residual"] + first["loss_boundary"])
    assert last["rel_l2"] < first["rel_l2"]
    assert result.summary["steps"] == 300 and not result.summary["diverged"]
    assert [row["step"] for row in result.history] == [50, 100, 150, 200, 250, 300]


def test_lambda_changes_only_every_n_steps_after_the_step(backend):
    problem = get_problem("klein-gordon")
    settings = TrainSettings(method="M2", steps=30, log_every=30, width=10, depth=2, anneal_every=10, compile=False)
    impl = get_backend(backend)
    trainer = impl.trainer(problem, settings, "cpu")
    start = seed_start(problem, settings)
    state = trainer.init(start.params, start.mu, start.sigma)
    _, out = trainer.train(state, draw_batches(problem, start.batches, 30, 128, "float32"))
    changed = np.flatnonzero(np.any(np.diff(np.vstack([np.ones(3), out.weights]), axis=0) != 0, axis=1))
    assert changed.tolist() == [0, 10, 20]  # updated after steps 0, 10, 20 (spec 3.2.5)
    assert np.all(out.weights[:, 0] == 1)  # the residual weight stays 1
    assert np.all(out.weights[:, 1:] > 1)  # KG's initial and boundary weights both rise


def test_results_do_not_depend_on_the_log_interval(backend):
    """The log interval is also the chunk a compiled call runs (JAX pads a short last chunk, and
    both decide the annealing steps from the shared step count): 10 + 10 + 5 steps must train
    exactly as one chunk of 25, lambda updates across chunk boundaries included."""
    problem = get_problem("helmholtz")
    common = dict(method="M2", steps=25, width=8, depth=2, dtype="float64", compile=False)
    chunked = train(problem, TrainSettings(**common, log_every=10), backend)
    whole = train(problem, TrainSettings(**common, log_every=25), backend)
    assert [row["step"] for row in chunked.history] == [10, 20, 25] and whole.history[-1]["step"] == 25
    assert chunked.params.keys() == whole.params.keys()
    for name in chunked.params:  # loss_weights included
        np.testing.assert_allclose(chunked.params[name], whole.params[name], rtol=1e-12, atol=1e-15, err_msg=name)
    last = {k: v for k, v in chunked.history[-1].items() if k != "seconds"}
    assert last == pytest.approx({k: v for k, v in whole.history[-1].items() if k != "seconds"}, rel=1e-12)
    assert chunked.params["loss_weights"][1] != 1.0  # lambda did move


def test_a_diverging_run_stops_and_says_where(backend):
    problem = get_problem("helmholtz")
    settings = TrainSettings(method="M1", steps=400, log_every=50, width=10, depth=2, lr=1e30, compile=False)  # float32 overflows at once
    result = train(problem, settings, backend)
    assert result.summary["diverged"]
    assert result.summary["diverged_at_step"] < 400
    assert result.summary["steps"] == result.summary["diverged_at_step"] + 1
    assert np.isnan(result.history[-1]["rel_l2"])


def test_adam_matches_torch_and_the_schedule_matches_the_spec():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p = {"w": rng.normal(size=(3, 2))}
    m, v = {"w": np.zeros((3, 2))}, {"w": np.zeros((3, 2))}
    tp = torch.tensor(p["w"], requires_grad=True)
    opt = torch.optim.Adam([tp], lr=1e-2)
    for count in range(5):
        g = rng.normal(size=(3, 2))
        p, m, v = adam_update(p, {"w": g}, m, v, count, 1e-2)
        tp.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(p["w"], tp.detach().numpy(), rtol=1e-12)
    assert learning_rate(40000, 1e-3, 0.9, 1000) == pytest.approx(1.478e-5, rel=1e-3)  # spec 2.4


def test_settings_reject_bad_values_naming_the_flag():
    for kwargs, pattern in [({"steps": 0}, "--iterations must be a positive integer"),
                            ({"width": -50}, "--width must be a positive integer, got -50"),
                            ({"method": "M5"}, "choose one of: M1, M2, M3, M4"),
                            ({"gate": "papr"}, "did you mean 'paper'"),
                            ({"dtype": "float16"}, "choose one of: float32, float64"),
                            ({"weighting": "cod"}, "unknown weighting variant")]:
        with pytest.raises(UsageError, match=pattern):
            TrainSettings(**kwargs)


def test_lambda_after_step_0_uses_the_post_step_gradients_of_that_batch(backend):
    """Spec 3.2.5: lambda_hat comes from the gradients at the updated parameters, on step 0's batch."""
    problem = get_problem("helmholtz")
    settings = TrainSettings(method="M2", width=10, depth=2, dtype="float64", compile=False)
    trainer = get_backend(backend).trainer(problem, settings, "cpu")
    start = seed_start(problem, settings)
    state = trainer.init(start.params, start.mu, start.sigma)
    batches = draw_batches(problem, start.batches, 1, 128, "float64")
    before_losses, before_grads = trainer.gradients(state, [b[0] for b in batches])
    state, out = trainer.train(state, batches)
    _, after_grads = trainer.gradients(state, [b[0] for b in batches])
    weighting = settings.weighting_for(problem)
    want = weighting.update(np, after_grads, np.ones(2))
    np.testing.assert_allclose(out.weights[0], want, rtol=1e-10)
    assert not np.allclose(weighting.update(np, before_grads, np.ones(2)), want, rtol=1e-6)
    np.testing.assert_allclose(out.losses[0], before_losses, rtol=1e-12)  # logged: before the step


def test_adam_tf1_form_matches_a_hand_computed_step():
    # one step from zero moments: m = 0.1 g, v = 0.001 g^2; tf1: lr_t = lr sqrt(1 - 0.999) / (1 - 0.9)
    g, lr, eps = 0.5, 1e-2, 1e-8
    p, _, _ = adam_update({"w": np.array(1.0)}, {"w": np.array(g)}, {"w": np.array(0.0)}, {"w": np.array(0.0)},
                          0, lr, eps=eps, form="tf1")
    lr_t = lr * np.sqrt(1 - 0.999) / (1 - 0.9)
    assert p["w"] == pytest.approx(1.0 - lr_t * (0.1 * g) / (np.sqrt(0.001 * g * g) + eps), rel=1e-14)
    q, _, _ = adam_update({"w": np.array(1.0)}, {"w": np.array(g)}, {"w": np.array(0.0)}, {"w": np.array(0.0)},
                          0, lr, eps=eps)
    assert q["w"] == pytest.approx(1.0 - lr * 1.0 / (1.0 + eps / g), rel=1e-14)  # standard: m_hat/(sqrt(v_hat)+eps)


class _StepProbe:
    """A probe that records the step it sees and the sum of its batch's first region."""

    every = 4
    columns = ("probe_step", "probe_batch_sum")

    def __init__(self):
        self.seen = []

    def __call__(self, context):
        self.seen.append((context.step, context.lane))
        return {"probe_step": float(context.step), "probe_batch_sum": float(np.sum(context.batch[0]))}


def test_probes_run_at_their_steps_and_a_full_batch_stays_fixed():
    """train_seeds calls each probe at the chunk ends on its interval (and at step 0 when asked),
    its values join those rows (NaN elsewhere), and with ``full_batch`` every step sees one batch."""
    from gradpath.backends.training import log_interval, train_seeds

    problem = get_problem("poisson1d")
    settings = [TrainSettings(method="M2", width=4, depth=1, steps=12, log_every=log_interval(6, 4), batch_size=8,
                              dtype="float64", device="cpu", seed=s) for s in (0, 1)]
    probe = _StepProbe()
    results = train_seeds(problem, settings, "jax", probes=[probe], probe_at_start=True, full_batch=True)
    for result in results:
        rows = {row["step"]: row for row in result.history}
        assert sorted(rows) == [0, 2, 4, 6, 8, 10, 12]
        probed = [s for s, row in rows.items() if not np.isnan(row["probe_step"])]
        assert probed == [0, 4, 8, 12] and all(rows[s]["probe_step"] == s for s in probed)
        # a full batch: the probe sees the same points at every step it runs
        sums = {rows[s]["probe_batch_sum"] for s in probed}
        assert len(sums) == 1
    assert sorted({lane for _, lane in probe.seen}) == [0, 1]  # one call per seed trained together
    # the two seeds' fixed batches differ (each seed draws its own)
    assert results[0].history[0]["probe_batch_sum"] != results[1].history[0]["probe_batch_sum"]
