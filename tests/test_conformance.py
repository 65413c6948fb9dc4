"""The conformance kit on the built-in problems and backends (torch against the reference jax).

CI runs a fast slice of the backend matrix: every problem with M4 (gated net and annealing) and
every method on poisson1d. ``GRADPATH_CONFORMANCE_FULL=1`` runs every problem x every method.
Each jax replay costs a few seconds of XLA compilation; torch runs eagerly (compile=False).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from gradpath.backends import conformance as kit
from gradpath.problems import BUILTIN

HAVE = {name: importlib.util.find_spec(name) is not None for name in ("jax", "torch")}
needs = {name: pytest.mark.skipif(not ok, reason=f"{name} is not installed") for name, ok in HAVE.items()}
BACKENDS = [pytest.param(b, marks=needs[b]) for b in ("jax", "torch")]
PROBLEMS = sorted(BUILTIN)

if os.environ.get("GRADPATH_CONFORMANCE_FULL"):
    EQUIVALENCE = [(p, m) for p in PROBLEMS for m in kit.METHOD_NAMES]
else:
    EQUIVALENCE = [(p, "M4") for p in PROBLEMS] + [("poisson1d", m) for m in ("M1", "M2", "M3")]


@pytest.mark.parametrize("name", PROBLEMS)
def test_builtin_problem_passes_the_kit(name):
    kit.check_problem(kit.small_problem(name))


def test_exact_solution_check_catches_a_wrong_forcing():
    problem = kit.small_problem("helmholtz")
    wrong = type(problem)(k=2.0)  # same exact solution, forcing of another k: the residual is not 0
    object.__setattr__(wrong, "forcing", problem.forcing)
    with pytest.raises(AssertionError, match="term 'residual'"):
        kit.check_exact_solution(wrong)


def test_finite_differences_of_a_closed_form():
    problem = kit.small_problem("helmholtz")  # u = sin(pi x) sin(4 pi y)
    x = np.array([[0.3, -0.2], [-0.7, 0.55]])
    d = kit.finite_difference(problem, x, ("u_x", "u_yy", "u_xy", "u_xyy"))
    sx, cx, sy, cy = np.sin(np.pi * x[:, 0]), np.cos(np.pi * x[:, 0]), np.sin(4 * np.pi * x[:, 1]), np.cos(4 * np.pi * x[:, 1])
    np.testing.assert_allclose(d["u_x"], np.pi * cx * sy, rtol=1e-8)
    np.testing.assert_allclose(d["u_yy"], -16 * np.pi**2 * sx * sy, rtol=1e-8)
    np.testing.assert_allclose(d["u_xy"], 4 * np.pi**2 * cx * cy, rtol=1e-8)
    np.testing.assert_allclose(d["u_xyy"], -16 * np.pi**3 * cx * sy, rtol=1e-6)


def _namespace(name):
    if name == "numpy":
        return np
    if name == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        return jax.numpy
    pytest.importorskip("torch")
    import array_api_compat.torch as xp
    return xp


@pytest.mark.parametrize("namespace", ["numpy", "jax", "torch"])
def test_weighting_golden_in_every_namespace(namespace):
    kit.check_weighting_golden(_namespace(namespace))


@pytest.mark.parametrize("method", ["M1", "M3"])
@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_derivatives_match_the_numpy_jets(backend, problem, method):
    kit.check_derivatives(backend, kit.small_problem(problem), method)


@needs["jax"]
@needs["torch"]
@pytest.mark.parametrize("problem, method", EQUIVALENCE)
def test_torch_matches_the_reference_backend(problem, method):
    kit.check_equivalence("torch", kit.small_problem(problem), method)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_decreases(backend):
    kit.check_loss_decreases(backend, kit.small_problem("poisson1d"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_numbers(backend):
    kit.check_deterministic(backend, kit.small_problem("poisson1d"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stopped_run_resumes_bit_for_bit(backend):
    kit.check_resumes(backend, kit.small_problem("poisson1d"))
