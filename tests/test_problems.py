"""Problems: exact solutions satisfy their PDE and constraints; sampling; normalisation; registry."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradpath.backends.data import draw_batches
from gradpath.problems import get_problem, problem_names
from gradpath.problems.core import Term, parse_derivative
from gradpath.problems.geometry import Box
from gradpath.problems.errors import UsageError

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

    from gradpath.problems.core import Problem

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


@pytest.mark.parametrize("name, params, message", [
    ("poisson1d", {"C": 0}, "poisson1d with C=0.0: the exact solution has norm 0 on the test grid, so rel_l2"),
    ("poisson1d", {"C": 1e-300}, "the exact solution has norm 0"),  # underflows: no relative error either
    ("poisson1d", {"C": 1e200}, "the forcing C^2 sin(C x) is not finite"),
    ("helmholtz", {"a1": 0}, "helmholtz with a1=0.0, a2=4.0, k=1.0: the exact solution has norm 0"),
    ("helmholtz", {"a2": 0}, "the exact solution has norm 0"),
    ("helmholtz", {"k": 1e200}, "the forcing q is not finite"),
    ("klein-gordon", {"k": -1}, "klein-gordon k must be >= 0, got -1"),
    ("klein-gordon", {"k": 5000}, "the forcing f is not finite"),
    ("cavity", {"Re": -100}, "cavity Re must be a finite number > 0, got -100.0"),
    ("cavity", {"Re": 0}, "cavity Re must be a finite number > 0"),
    ("cavity", {"reference_n": 4}, "cavity reference_n (grid cells per side) must be an integer in [8, 1024], got 4"),
    ("cavity", {"reference_n": 2048}, "cavity reference_n (grid cells per side) must be an integer in [8, 1024]"),
    ("cavity", {"Re": 1000, "reference_n": 8}, "under-resolved"),
])
def test_a_degenerate_problem_is_refused_when_built(name, params, message, recwarn):
    with pytest.raises(UsageError, match=re.escape(message)):
        get_problem(name, **params)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # checked quietly


@pytest.mark.parametrize("name, params", [("poisson1d", {"C": -2.5}), ("helmholtz", {"a1": 0.5, "a2": -3}),
                                          ("helmholtz", {"k": 0}), ("klein-gordon", {"k": 0, "gamma": 0}),
                                          ("cavity", {"Re": 400, "reference_n": 32})])
def test_non_degenerate_parameters_still_build(name, params):
    problem = get_problem(name, **params)
    assert all(problem.parameters()[k] == v for k, v in params.items())


def test_every_registered_problem_builds_with_its_defaults():
    # the four built-in ones and the example plugin (tests/plugin_example), validated when built
    for name in problem_names():
        problem = get_problem(name)
        ref = problem.reference(problem.test_grid()) if name != "cavity" else None
        assert ref is None or np.linalg.norm(ref) > 0


_numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                     st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1e154, 1e200, -1.0, 2.0]))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(name=st.sampled_from(["helmholtz", "poisson1d", "klein-gordon"]), values=st.lists(_numbers, min_size=3, max_size=3),
       k=st.integers(-3, 6000))
def test_any_parameters_build_a_problem_with_a_defined_error_or_are_refused(name, values, k):
    fields = {"helmholtz": ("a1", "a2", "k"), "poisson1d": ("C",), "klein-gordon": ("alpha", "beta", "gamma")}[name]
    params = dict(zip(fields, values))
    if name == "klein-gordon":
        params["k"] = k
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # refused quietly, or built without overflow
        try:
            problem = get_problem(name, **params)
        except UsageError as exc:
            assert "\n" not in str(exc) and name in str(exc)
            return
        grid = problem.test_grid()
        ref = problem.reference(grid)
        assert np.isfinite(ref).all() and np.isfinite(problem.metrics(ref, ref)["rel_l2"])
