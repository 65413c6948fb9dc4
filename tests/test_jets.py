"""Forward-mode jets (backends/jets.py) against closed forms and against nested autodiff."""

from __future__ import annotations


import numpy as np
import pytest

from gradpath.backends.init import init_params
from gradpath.backends.jets import _set_partitions, closure, network_jets

jax = pytest.importorskip("jax")
jnp = jax.numpy


def test_closure_keeps_only_needed_sub_indices():
    # a Laplacian needs no mixed derivative
    assert closure([(0, 0), (1, 1)]) == ((), (0,), (1,), (0, 0), (1, 1))
    assert closure([(0, 0, 1)]) == ((), (0,), (1,), (0, 0), (0, 1), (0, 0, 1))


def test_set_partitions_are_the_bell_numbers():
    assert [len(_set_partitions(m)) for m in range(6)] == [1, 1, 2, 5, 15, 52]


def test_one_hidden_layer_against_closed_form():
    """u(x) = sum_j c_j tanh(a_j x_n + b_j) + d with x_n = (x - mu)/sigma, derivatives by hand."""
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
    mu, sigma = np.array([0.3]), np.array([0.7])
    params = {"W0": a[None, :], "b0": b, "W1": c[:, None], "b1": np.array([0.2])}
    x = rng.uniform(-1, 1, size=(7, 1))
    t = np.tanh((x - mu) / sigma * a + b)
    s = 1 - t**2
    k = a / sigma[0]  # d(pre-activation)/dx
    expected = {
        (): (t * c).sum(1) + 0.2,
        (0,): (s * k * c).sum(1),
        (0, 0): (-2 * t * s * k**2 * c).sum(1),
        (0, 0, 0): (s * (6 * t**2 - 2) * k**3 * c).sum(1),
        (0, 0, 0, 0): (s * (-24 * t**3 + 16 * t) * k**4 * c).sum(1),
    }
    got = network_jets(np, params, x, mu, sigma, [(0, i) for i in expected], net="mlp")
    for (index, want), have in zip(expected.items(), got):
        np.testing.assert_allclose(have, want, rtol=1e-12, atol=1e-12, err_msg=str(index))


def _autodiff_reference(params, x, mu, sigma, index, net, gate, col):
    """d^index of output ``col`` by nested jax.grad of the plain value network (float64)."""

    def value(point):
        out = network_jets(jnp, params, point[None, :], mu, sigma, [(col, ())], net=net, gate=gate)[0]
        return out[0]

    f = value
    for i in index:
        f = (lambda g, i: lambda p: jax.grad(g)(p)[i])(f, i)
    return np.asarray(jax.vmap(f)(x))


@pytest.mark.parametrize("net,gate", [("mlp", "code"), ("gated", "code"), ("gated", "paper"), ("gated", "code-2020")])
def test_mixed_derivatives_up_to_third_order_match_nested_autodiff(net, gate):
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(1)
    params = {k: jnp.asarray(v) for k, v in init_params((2, 6, 6, 6, 2), net, rng).items()}
    for k in params:
        if k.startswith("b"):  # non-zero biases exercise every term
            params[k] = jnp.asarray(rng.normal(size=params[k].shape))
    mu, sigma = jnp.asarray([0.1, -0.2]), jnp.asarray([0.6, 0.4])
    x = jnp.asarray(rng.uniform(-1, 1, size=(5, 2)))
    indices = [(), (0,), (1,), (0, 0), (0, 1), (1, 1), (0, 0, 1), (0, 1, 1), (1, 1, 1)]
    for col in (0, 1):
        got = network_jets(jnp, params, x, mu, sigma, [(col, i) for i in indices], net=net, gate=gate)
        for index, have in zip(indices, got):
            want = _autodiff_reference(params, x, mu, sigma, index, net, gate, col)
            np.testing.assert_allclose(np.asarray(have), want, rtol=1e-10, atol=1e-10,
                                       err_msg=f"{net}/{gate} output {col} d{index}")


def test_gated_code_form_against_hand_computed_forward_pass():
    """Spec 4.3: U = tanh(X E1 + c1), V = tanh(X E2 + c2); per layer Z = tanh(H W + b), H <- Z U + (1-Z) V."""
    x = np.array([[0.5, -0.25]])
    E1, c1 = np.array([[0.1, 0.2], [0.3, -0.4]]), np.array([0.05, -0.05])
    E2, c2 = np.array([[-0.2, 0.1], [0.4, 0.3]]), np.array([0.0, 0.1])
    W0, b0 = np.array([[1.0, -1.0], [0.5, 0.5]]), np.array([0.0, 0.1])
    W1, b1 = np.array([[0.3, 0.7], [-0.6, 0.2]]), np.array([0.2, 0.0])
    W2, b2 = np.array([[1.5], [-2.0]]), np.array([0.3])
    # by hand, one number at a time (mu = 0, sigma = 1)
    U = np.tanh([0.5 * 0.1 - 0.25 * 0.3 + 0.05, 0.5 * 0.2 - 0.25 * -0.4 - 0.05])
    V = np.tanh([0.5 * -0.2 - 0.25 * 0.4 + 0.0, 0.5 * 0.1 - 0.25 * 0.3 + 0.1])
    Z = np.tanh([0.5 * 1.0 - 0.25 * 0.5 + 0.0, 0.5 * -1.0 - 0.25 * 0.5 + 0.1])
    H = Z * U + (1 - Z) * V
    Z = np.tanh([H[0] * 0.3 + H[1] * -0.6 + 0.2, H[0] * 0.7 + H[1] * 0.2 + 0.0])
    H = Z * U + (1 - Z) * V
    want = H[0] * 1.5 + H[1] * -2.0 + 0.3
    params = dict(W0=W0, b0=b0, W1=W1, b1=b1, W2=W2, b2=b2, E1=E1, c1=c1, E2=E2, c2=c2)
    got = network_jets(np, params, x, np.zeros(2), np.ones(2), [(0, ())], net="gated", gate="code")[0]
    np.testing.assert_allclose(got, [want], rtol=1e-14)
    # the paper's printed form: first hidden layer ungated, then H <- (1 - Z) U + Z V
    H = np.tanh([0.5 * 1.0 - 0.25 * 0.5 + 0.0, 0.5 * -1.0 - 0.25 * 0.5 + 0.1])
    Z = np.tanh([H[0] * 0.3 + H[1] * -0.6 + 0.2, H[0] * 0.7 + H[1] * 0.2 + 0.0])
    H = (1 - Z) * U + Z * V
    want_paper = H[0] * 1.5 + H[1] * -2.0 + 0.3
    got = network_jets(np, params, x, np.zeros(2), np.ones(2), [(0, ())], net="gated", gate="paper")[0]
    np.testing.assert_allclose(got, [want_paper], rtol=1e-14)


def test_gated_code_2020_form_against_hand_computed_forward_pass():
    """Spec 4.3 bug history: before July 2021 the second branch was tanh(1 - H W + b) * V."""
    x = np.array([[0.3, 0.8]])
    E1, c1, E2, c2 = np.array([[0.2], [-0.1]]), np.array([0.1]), np.array([[0.5], [0.4]]), np.array([-0.2])
    W0, b0, W1, b1 = np.array([[0.7], [-0.3]]), np.array([0.05]), np.array([[2.0]]), np.array([0.1])
    U = np.tanh(0.3 * 0.2 + 0.8 * -0.1 + 0.1)
    V = np.tanh(0.3 * 0.5 + 0.8 * 0.4 - 0.2)
    HW = 0.3 * 0.7 + 0.8 * -0.3
    H = np.tanh(HW + 0.05) * U + np.tanh(1 - HW + 0.05) * V
    want = H * 2.0 + 0.1
    params = dict(W0=W0, b0=b0, W1=W1, b1=b1, E1=E1, c1=c1, E2=E2, c2=c2)
    got = network_jets(np, params, x, np.zeros(2), np.ones(2), [(0, ())], net="gated", gate="code-2020")[0]
    np.testing.assert_allclose(got, [want], rtol=1e-14)


def test_init_is_glorot_normal_with_random_encoder_biases():
    rng = np.random.default_rng(0)
    p = init_params((2, 400, 400, 1), "gated", rng)
    assert np.all(p["b0"] == 0) and np.all(p["b2"] == 0)
    np.testing.assert_allclose(p["W1"].std(), np.sqrt(2 / 800), rtol=0.02)
    np.testing.assert_allclose(p["c1"].std(), np.sqrt(2 / 401), rtol=0.15)  # spec 2.3: xavier_init([1, width])
    # M1 and M3 with one seed share the MLP weights
    q = init_params((2, 400, 400, 1), "mlp", np.random.default_rng(0))
    assert all(np.array_equal(p[k], q[k]) for k in q)
