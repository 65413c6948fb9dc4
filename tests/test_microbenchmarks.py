"""Micro-benchmarks (pytest-benchmark) of one step, one lambda update and one residual evaluation.

    python -m pytest tests/test_microbenchmarks.py --benchmark-enable --benchmark-only

In the normal test run benchmarking is off (``--benchmark-disable`` in addopts): each body then
runs once, as a plain test, so it must be cheap. The torch step is compiled only when
benchmarking (compiling costs seconds; eager runs the same maths). Helmholtz, M2 (the MLP with
annealing, so the step graph and the lambda update both exist), float32, batch 128.
No timing is ever asserted: the numbers are reported, not tested.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from gradpath.backends import get_backend
from gradpath.backends.data import draw_batches, seed_start
from gradpath.backends.settings import TrainSettings
from gradpath.problems import get_problem


@functools.lru_cache(maxsize=None)
def _prepare(backend: str, compile: bool):
    """A warmed-up Helmholtz M2 trainer on the CPU, its state and one step's batches (built once per module)."""
    problem = get_problem("helmholtz")
    settings = TrainSettings(method="M2", steps=1000, log_every=1, device="cpu", compile=compile)
    start = seed_start(problem, settings)
    trainer = get_backend(backend).trainer(problem, settings, "cpu")
    state = trainer.init(start.params, start.mu, start.sigma)
    batches = draw_batches(problem, start.batches, 1, settings.batch_size, settings.dtype)
    trainer.warmup(state, batches)
    return problem, settings, trainer, state, batches


@pytest.fixture
def prepared(backend, benchmark):
    benchmark.group = f"{backend} helmholtz M2"
    return _prepare(backend, not benchmark.disabled)


def test_step(prepared, benchmark):
    """One training step (a one-step compiled chunk) and the device sync; every tenth call anneals, as in a run."""
    problem, settings, trainer, state, batches = prepared
    box = {"state": state, "step": 0}

    def step():
        box["state"], out = trainer.train(box["state"], batches, box["step"])
        trainer.sync()
        box["step"] += 1
        return out

    step()  # warm-up outside the measurement: jax compiles gradients() and predict() on first use
    out = benchmark(step)
    assert out.losses.shape == (1, len(problem.terms())) and np.isfinite(out.losses).all()


def test_lambda_update(prepared, benchmark):
    """One loss-weight update: per-term gradients (Trainer.gradients) and the annealing rule."""
    problem, settings, trainer, state, batches = prepared
    batch = [b[0] for b in batches]
    weighting = settings.weighting_for(problem)
    lambdas = np.ones(len(problem.terms()), dtype=np.float32)

    def update():
        _, grads = trainer.gradients(state, batch)
        return weighting.update(np, grads, lambdas, settings.anneal_alpha)

    update()
    new = benchmark(update)
    assert new.shape == lambdas.shape and np.isfinite(new).all() and new[0] == 1.0


def test_residual_evaluation(prepared, benchmark):
    """The PDE residual at 128 points: the derivatives it needs (Trainer.predict) and its misfit."""
    problem, settings, trainer, state, batches = prepared
    term = problem.terms()[0]
    x = batches[0][0].reshape(-1, len(problem.inputs)).astype(np.float64)

    def residual():
        d = trainer.predict(state, x, term.needs)
        return term.misfit(np, x, {k: v.astype(np.float64) for k, v in d.items()})

    residual()
    r = benchmark(residual)
    assert term.name == "residual" and r.shape == (x.shape[0],) and np.isfinite(r).all()
