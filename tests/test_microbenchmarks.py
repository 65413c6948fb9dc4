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

from gradpath.suite.perf.timing import prepare


@functools.lru_cache(maxsize=None)
def _prepare(backend: str, compile: bool):
    """A warmed-up Helmholtz M2 trainer on the CPU (gradpath.suite.perf.timing, as every timing), built once per module."""
    return prepare("helmholtz", "M2", backend, "cpu", chunk=1, steps=1000, compile=compile)


@pytest.fixture
def prepared(backend, benchmark):
    benchmark.group = f"{backend} helmholtz M2"
    return _prepare(backend, not benchmark.disabled)


def test_step(prepared, benchmark):
    """One training step (a one-step compiled chunk) and the device sync; every tenth call anneals, as in a run."""
    def step():
        return prepared.train(1)

    step()  # warm-up outside the measurement: jax compiles gradients() and predict() on first use
    out = benchmark(step)
    assert out.losses.shape == (1, len(prepared.problem.terms())) and np.isfinite(out.losses).all()


def test_lambda_update(prepared, benchmark):
    """One loss-weight update: per-term gradients (Trainer.gradients) and the annealing rule."""
    problem, settings, trainer, state = prepared.problem, prepared.settings, prepared.trainer, prepared.state
    batch = [b[0] for b in prepared.batches(1)]
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
    problem, trainer, state = prepared.problem, prepared.trainer, prepared.state
    term = problem.terms()[0]
    x = prepared.batches(1)[0][0].reshape(-1, len(problem.inputs)).astype(np.float64)

    def residual():
        d = trainer.predict(state, x, term.needs)
        return term.misfit(np, x, {k: v.astype(np.float64) for k, v in d.items()})

    residual()
    r = benchmark(residual)
    assert term.name == "residual" and r.shape == (x.shape[0],) and np.isfinite(r).all()
