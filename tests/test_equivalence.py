"""Cross-backend equivalence: one seed gives the same losses, gradients and lambdas in every backend.

Initial weights and batches come from numpy (backends.init, backends.data), so the only
differences left are the frameworks' floating-point kernels: 1e-9 relative in float64 over the
first 100 steps, 1e-4 in float32 (issue 2).
"""

from __future__ import annotations

import numpy as np
import pytest

from backends import get_backend
from backends.data import draw_batches, seed_streams
from backends.init import init_params
from backends.settings import TrainSettings
from problems import get_problem
pytest.importorskip("jax")
pytest.importorskip("torch")


def first_steps(backend: str, problem, settings: TrainSettings, steps: int = 100):
    """Per-step losses and lambdas of the first ``steps`` steps, then the per-term gradients."""
    trainer = get_backend(backend).trainer(problem, settings, "cpu")
    streams = seed_streams(settings.seed)
    params = init_params(settings.layers_for(problem), settings.method_spec.net, streams["init"])
    state = trainer.init(params, *problem.normalisation(streams["normalisation"]))
    batches = draw_batches(problem, streams["batches"], steps + 1, settings.batch_size, settings.dtype)
    state, out = trainer.train(state, [b[:steps] for b in batches], 0)
    losses, grads = trainer.gradients(state, [b[steps] for b in batches])
    return out, losses, grads, trainer.export(state)


def assert_same(a, b, rtol, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.maximum(np.abs(b).max(), 1e-30)
    err = np.abs(a - b).max() / scale
    assert err <= rtol, f"{what}: max relative difference {err:.2e} > {rtol:.0e}"


def compare(problem, settings, rtol):
    ref, other = (first_steps(name, problem, settings) for name in ("jax", "torch"))
    assert_same(other[0].losses, ref[0].losses, rtol, "losses per step")
    assert_same(other[0].weights, ref[0].weights, rtol, "lambdas per step")
    assert_same(other[1], ref[1], rtol, "losses after 100 steps")
    for t, (g_other, g_ref) in enumerate(zip(other[2], ref[2])):
        for key in g_ref:
            assert_same(g_other[key], g_ref[key], rtol, f"term {t} gradient {key}")
    for key in ref[3]:
        assert_same(other[3][key], ref[3][key], rtol, f"parameter {key}")


@pytest.mark.parametrize("method", ["M1", "M2", "M3", "M4"])
@pytest.mark.parametrize("problem_name", ["helmholtz", "klein-gordon", "poisson1d"])
def test_float64_first_100_steps_agree_to_1e_9(problem_name, method):
    compare(get_problem(problem_name), TrainSettings(method=method, dtype="float64", seed=1), 1e-9)


@pytest.mark.parametrize("gate", ["paper", "code-2020"])
@pytest.mark.parametrize("weighting", ["paper", "code-cavity", "mean", "grad-norm"])
def test_float64_variants_agree(gate, weighting):
    settings = TrainSettings(method="M4", gate=gate, weighting=weighting, dtype="float64", width=20, depth=2)
    compare(get_problem("klein-gordon"), settings, 1e-9)


@pytest.mark.parametrize("method", ["M1", "M4"])
def test_float32_first_100_steps_agree_to_1e_4(method):
    compare(get_problem("helmholtz"), TrainSettings(method=method, seed=2), 1e-4)
