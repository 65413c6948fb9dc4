"""The lid-driven cavity problem: both formulations' residuals, boundary targets and the two metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradpath.backends.data import draw_batches
from gradpath.problems import get_problem
from gradpath.problems.core import parse_derivative
from gradpath.problems.errors import UsageError

jax = pytest.importorskip("jax")
jnp = jax.numpy


def psi(p):  # a smooth stream function, and a pressure
    return jnp.sin(math.pi * p[0]) ** 2 * jnp.sin(math.pi * p[1]) ** 2 * (1 + p[0] * p[1])


def pressure(p):
    return p[0] * p[1] ** 2 + jnp.cos(p[0])


def velocity(p):  # u = psi_y, v = -psi_x
    g = jax.grad(psi)(p)
    return jnp.stack([g[1], -g[0]])


FIELDS = {"psi": psi, "p": pressure, "u": lambda p: velocity(p)[0], "v": lambda p: velocity(p)[1]}


def fields_derivatives(problem, x, keys):
    jax.config.update("jax_enable_x64", True)
    out = {}
    for key in keys:
        col, index = parse_derivative(key, problem.inputs, problem.outputs)
        f = FIELDS[problem.outputs[col]]
        for i in index:
            f = (lambda g, i: lambda p: jax.grad(g)(p)[i])(f, i)
        out[key] = np.asarray(jax.vmap(f)(jnp.asarray(x)))
    return out


def navier_stokes_by_autodiff(x, re):
    """r = (u.grad)u + grad p - lap(u)/Re, straight from the velocity function."""
    jac = jax.vmap(jax.jacfwd(velocity))(jnp.asarray(x))  # (n, 2, 2): d(u, v)/d(x, y)
    hess = jax.vmap(jax.hessian(velocity))(jnp.asarray(x))  # (n, 2, 2, 2)
    vel = jax.vmap(velocity)(jnp.asarray(x))
    grad_p = jax.vmap(jax.grad(pressure))(jnp.asarray(x))
    conv = jnp.einsum("nj,nij->ni", vel, jac)
    lap = hess[:, :, 0, 0] + hess[:, :, 1, 1]
    return np.asarray(conv + grad_p - lap / re)


@pytest.mark.parametrize("form", ["psi-p", "u-v-p"])
def test_residual_is_the_navier_stokes_operator(form):
    problem = get_problem("cavity", form=form, Re=50.0, reference_n=16)
    term = problem.terms()[0]
    x = np.random.default_rng(0).uniform(0, 1, size=(20, 2))
    components = term.misfit(np, x, fields_derivatives(problem, x, term.needs))
    want = navier_stokes_by_autodiff(x, 50.0)
    np.testing.assert_allclose(components[0], want[:, 0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(components[1], want[:, 1], rtol=1e-10, atol=1e-10)
    if form == "u-v-p":  # the field is divergence-free, so the continuity residual vanishes
        np.testing.assert_allclose(components[2], 0, atol=1e-10)
    else:
        assert len(components) == 2  # continuity holds exactly in the stream-function form


@pytest.mark.parametrize("form", ["psi-p", "u-v-p"])
def test_boundary_targets_the_lid_and_the_walls(form):
    problem = get_problem("cavity", form=form, reference_n=16)
    term = problem.terms()[1]
    assert term.scale == (0.5 if form == "psi-p" else 1.0)  # the authors' 1/2 (spec 5.4)
    x = draw_batches(problem, np.random.default_rng(1), 1, 8, "float64")[1][0].reshape(-1, 2)
    zero = {k: np.zeros(len(x)) for k in term.needs}
    du, dv = term.misfit(np, x, zero)
    np.testing.assert_array_equal(-du, (x[:, 1] == 1.0).astype(float))  # first 8 points: the lid
    assert (-du[:8] == 1).all() and (du[8:] == 0).all() and (dv == 0).all()


def test_metrics_are_the_spectral_ratio_and_the_frobenius_ratio():
    problem = get_problem("cavity", reference_n=16)
    ref = np.ones(10_000)
    pred = ref.copy()
    pred[:100] += 1.0  # one row of the 100 x 100 grid off by 1
    m = problem.metrics(pred, ref)
    assert m["rel_spectral"] == pytest.approx(10 / 100)  # ||E||_2 = 10, ||ones||_2 = 100
    assert m["rel_l2"] == pytest.approx(10 / 100)  # ||E||_F = 10, ||ones||_F = 100
    pred = ref * 1.0
    pred[np.arange(100) * 101] += 1.0  # identity-shaped error: spectral 1, Frobenius 10
    m = problem.metrics(pred, ref)
    assert m["rel_spectral"] == pytest.approx(0.01) and m["rel_l2"] == pytest.approx(0.1)
    assert problem.primary_metric == "rel_spectral" and problem.default_weighting == "code-cavity"


def test_forms_set_the_network_and_unknown_forms_are_refused():
    assert get_problem("cavity").layers == (2, 50, 50, 50, 2)
    assert get_problem("cavity", form="u-v-p").layers == (2, 50, 50, 50, 3)
    with pytest.raises(UsageError, match="choose one of: psi-p, u-v-p"):
        get_problem("cavity", form="vorticity")
