"""Annealing rules against golden values computed by hand on a tiny two-layer net's gradients."""

from __future__ import annotations

import numpy as np
import pytest

from backends.weighting import WEIGHTINGS, get_weighting
from problems.errors import UsageError

# Gradients of a [2, 2, 1] net: residual term first, then one boundary term.
RES = {"W0": np.array([[1.0, -4.0], [2.0, 0.0]]), "b0": np.array([0.5, -1.0]),
       "W1": np.array([[3.0], [-1.0]]), "b1": np.array([6.0])}
BND = {"W0": np.array([[0.5, -0.5], [1.0, 0.0]]), "b0": np.array([0.25, 0.25]),
       "W1": np.array([[2.0], [0.0]]), "b1": np.array([1.0])}
LAM = np.array([1.0, 2.0])

# By hand:
#   max|grad_W L_r|              = 4                  (weights only)   max over all = 6 (b1)
#   layer means |grad_W L_b|     = W0: 2/4 = 0.5, W1: 2/2 = 1 -> mean of means 0.75
#   global mean |grad_W L_b|     = 4/6;  over all params: (4 + 0.5 + 2 + 1)/9 = 5.5/9
#   global mean |grad L_r| (all) = (7 + 1.5 + 4 + 6)/9 = 18.5/9
#   per-layer ratios (cavity)    = W0: (4 / (2 * 0.5)) = 4, W1: 3 / (2 * 1) = 1.5 -> 4
GOLDEN = {
    # code: lam_hat = 4 / (lam * 0.75) = 4 / 1.5; EMA 0.1 on the new value
    "code": 0.9 * 2.0 + 0.1 * (4 / 1.5),
    # paper: lam_hat = 6 / (5.5/9) over all parameters, unweighted; EMA 0.9 on the new value
    "paper": 0.1 * 2.0 + 0.9 * (6 / (5.5 / 9)),
    # code-cavity: max over layers of the per-layer ratio = 4
    "code-cavity": 0.9 * 2.0 + 0.1 * 4.0,
    # mean: (18.5/9) / (5.5/9)
    "mean": 0.9 * 2.0 + 0.1 * (18.5 / 5.5),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_lra_variants_match_hand_computed_values(name):
    new = get_weighting(name).update(np, [RES, BND], LAM)
    assert new[0] == pytest.approx(1.0)  # the residual keeps weight 1
    assert new[1] == pytest.approx(GOLDEN[name], rel=1e-12)


def test_grad_norm_balances_every_term():
    norm_r = np.sqrt(1 + 16 + 4 + 0.25 + 1 + 9 + 1 + 36)
    norm_b = np.sqrt(0.25 + 0.25 + 1 + 0.0625 * 2 + 4 + 1)
    mean = (norm_r + norm_b) / 2
    new = get_weighting("grad-norm").update(np, [RES, BND], LAM)
    np.testing.assert_allclose(new, [0.9 * 1 + 0.1 * mean / norm_r, 0.9 * 2 + 0.1 * mean / norm_b], rtol=1e-12)


def test_code_fixed_point_is_the_square_root_of_the_paper_ratio():
    """Spec 3.2.2: dividing by grad(lambda L_b) makes lambda* = sqrt(r), r = max|g_r| / mean of layer means."""
    lam = np.array([1.0, 1.0])
    for _ in range(400):
        lam = get_weighting("code").update(np, [RES, BND], lam)
    assert lam[1] == pytest.approx(np.sqrt(4 / 0.75), rel=1e-6)


def test_alpha_override_and_unknown_variant():
    new = get_weighting("code").update(np, [RES, BND], LAM, alpha=1.0)
    assert new[1] == pytest.approx(4 / 1.5)
    with pytest.raises(UsageError, match="choose one of: code, code-cavity, grad-norm, mean, paper"):
        get_weighting("papr")
    assert set(WEIGHTINGS) == {"code", "paper", "code-cavity", "mean", "grad-norm"}
