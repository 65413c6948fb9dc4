"""Problems: exact solutions satisfy their PDE and constraints; sampling; normalisation; registry."""

from __future__ import annotations

import re

import numpy as np
import pytest

from backends.data import draw_batches
from problems import get_problem, problem_names
from problems.core import Term, parse_derivative
from problems.geometry import Box
from problems.errors import UsageError

jax = pytest.importorskip("jax")
jnp = jax.numpy

CASES = [("helmholtz", {}), ("helmholtz", {"a2": 1.0}), ("klein-gordon", {}), ("poisson1d", {"C": 4.0})]


def exact_derivatives(problem, x, keys):
    """Derivatives of the exact solution by nested jax.grad (float64)."""
    jax.config.update("jax_enable_x64", True)
    out = {}
    for key in keys:
        col, index = parse_derivative(key, problem.inputs, problem.outputs)
        name = problem.outputs[col]
        f = lambda p, name=name: problem.exact(jnp, p[None, :])[name][0]
        for i in index:
            f = (lambda g, i: lambda p: jax.grad(g)(p)[i])(f, i)
        out[key] = np.asarray(jax.vmap(f)(jnp.asarray(x)))
    return out


@pytest.mark.parametrize("name,params", CASES)
def test_exact_solution_zeroes_every_term(name, params):
    problem = get_problem(name, **params)
    batches = draw_batches(problem, np.random.default_rng(0), 1, 64, "float64")
    for term, points in zip(problem.terms(), batches):
        x = points.reshape(-1, points.shape[-1])
        d = exact_derivatives(problem, x, term.needs)
        misfit = term.misfit(np, x, d)
        for component in misfit if isinstance(misfit, tuple) else (misfit,):
            assert np.abs(component).max() < 1e-9, (name, term.name)


@pytest.mark.parametrize("name,params", CASES)
def test_problem_math_uses_only_the_array_api_standard(name, params):
    xps = pytest.importorskip("array_api_strict")
    problem = get_problem(name, **params)
    batches = draw_batches(problem, np.random.default_rng(1), 1, 16, "float64")
    for term, points in zip(problem.terms(), batches):
        x = points.reshape(-1, points.shape[-1])
        d = exact_derivatives(problem, x, term.needs)
        misfit = term.misfit(xps, xps.asarray(x), {k: xps.asarray(v) for k, v in d.items()})
        for component in misfit if isinstance(misfit, tuple) else (misfit,):
            assert float(xps.max(xps.abs(component))) < 1e-9


def test_helmholtz_initial_residual_loss_matches_the_spec():
    # spec 5.2: q = (1 - 17 pi^2) u, so mean(q^2) over the square is about 6.95e3
    p = get_problem("helmholtz")
    x = p.domain.sample(np.random.default_rng(0), (200_000,))
    assert np.mean(p.forcing(np, x) ** 2) == pytest.approx(6.95e3, rel=0.02)


@pytest.mark.parametrize("name", ["helmholtz", "klein-gordon", "poisson1d"])
def test_sampling_is_deterministic_and_stays_in_the_regions(name):
    problem = get_problem(name)
    a = draw_batches(problem, np.random.default_rng(3), 5, 32, "float64")
    b = draw_batches(problem, np.random.default_rng(3), 5, 32, "float64")
    for term, xa, xb in zip(problem.terms(), a, b):
        np.testing.assert_array_equal(xa, xb)
        for r, region in enumerate(term.regions):
            assert region.contains(xa[:, r]).all()
            assert problem.domain.contains(xa[:, r]).all()


def test_batches_do_not_depend_on_the_chunk_size():
    problem = get_problem("klein-gordon")
    whole = draw_batches(problem, np.random.default_rng(7), 6, 8, "float64")
    rng = np.random.default_rng(7)
    parts = [draw_batches(problem, rng, n, 8, "float64") for n in (2, 4)]
    for t in range(len(whole)):
        np.testing.assert_array_equal(whole[t], np.concatenate([parts[0][t], parts[1][t]]))


def test_normalisation_matches_the_uniform_moments():
    mu, sigma = get_problem("helmholtz").normalisation(np.random.default_rng(0))
    np.testing.assert_allclose(mu, 0, atol=0.01)
    np.testing.assert_allclose(sigma, 1 / np.sqrt(3), rtol=0.01)  # spec 2.2
    mu, sigma = get_problem("klein-gordon").normalisation(np.random.default_rng(0))
    np.testing.assert_allclose(mu, 0.5, atol=0.01)
    np.testing.assert_allclose(sigma, 1 / np.sqrt(12), rtol=0.01)


def test_test_grids_and_metric():
    assert get_problem("helmholtz").test_grid().shape == (10_000, 2)
    assert get_problem("poisson1d").test_grid().shape == (1000, 1)
    p = get_problem("helmholtz")
    ref = p.reference(p.test_grid())
    assert p.metrics(ref, ref)["rel_l2"] == 0
    assert p.metrics(2 * ref, ref)["rel_l2"] == pytest.approx(1.0)


def test_registry_errors_name_the_valid_choices():
    assert {"helmholtz", "klein-gordon", "poisson1d"} <= set(problem_names())
    with pytest.raises(UsageError, match="did you mean 'klein-gordon'"):
        get_problem("klein-gordan")
    with pytest.raises(UsageError, match="choose one of: a1, a2, k"):
        get_problem("helmholtz", b=1)
    with pytest.raises(UsageError, match="must be a number"):
        get_problem("helmholtz", a2="four")


@pytest.mark.parametrize("name, params, message", [
    ("klein-gordon", {"k": 3.7}, "parameter k of klein-gordon must be an integer, got 3.7"),  # never read as 3
    ("klein-gordon", {"k": True}, "must be an integer, got True"),
    ("helmholtz", {"a2": True}, "must be a number, got True"),
    ("helmholtz", {"a2": float("nan")}, "must be finite"),
    ("cavity", {"reference_n": "2.9"}, "parameter reference_n of cavity must be an integer, got '2.9'"),
])
def test_parameters_are_never_truncated_or_guessed(name, params, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        get_problem(name, **params)


def test_parameters_convert_what_is_exact():
    assert get_problem("klein-gordon", k="3").k == 3 and get_problem("klein-gordon", k=4.0).k == 4
    assert get_problem("helmholtz", a2=1).a2 == 1.0 and isinstance(get_problem("helmholtz", a2=1).a2, float)


def test_registry_errors_name_the_valid_choices_for_geometry():
    with pytest.raises(UsageError, match="inputs are"):
        parse_derivative("u_z", ("x", "y"), ("u",))


def _problem_with(terms):
    """A minimal 2-d problem class whose terms() returns ``terms`` (a plugin author's mistakes)."""
    import dataclasses

    from problems.core import Problem

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Mistaken(Problem):
        name = "mistaken"
        inputs = ("x", "y")
        domain = Box((0.0, 0.0), (1.0, 1.0))
        layers = (2, 8, 1)

        def terms(self):
            return terms

    return Mistaken


def _misfit(xp, x, d):
    return d["u"]


@pytest.mark.parametrize("terms, message", [
    ((Term("boundary", (Box((0.0, 0.0), (1.0, 1.0)),), ("u",), _misfit),), "the first term must be named 'residual'"),
    ((Term("residual", (Box((0.0,), (1.0,)),), ("u",), _misfit),), "term 'residual' samples a region of the wrong dimension"),
    ((Term("residual", (Box((0.0, 0.0), (1.0, 1.0)),), ("u_xz",), _misfit),), "inputs are"),
])
def test_a_problem_class_with_a_mistake_is_refused_when_built(terms, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        _problem_with(terms)()


@pytest.mark.parametrize("lo, hi, message", [
    ((0.0, 0.0), (1.0,), "box bounds must have one equal, non-zero length"),
    ((), (), "box bounds must have one equal, non-zero length"),
    ((0.0, 1.0), (1.0, 0.5), "box upper bounds must not be below lower ones"),
])
def test_a_box_with_bad_bounds_is_refused(lo, hi, message):
    with pytest.raises(UsageError, match=message):
        Box(lo, hi)
