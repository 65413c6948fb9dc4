"""Annealing rules against golden values computed by hand on a tiny two-layer net's gradients."""

from __future__ import annotations

import numpy as np
import pytest

from gradpath.backends.conformance import WEIGHTING_GOLDEN, check_weighting_golden, weighting_inputs
from gradpath.backends.weighting import WEIGHTINGS, get_weighting
from gradpath.problems.errors import UsageError

# The hand-computed golden values live in the conformance kit, so backend plugins check them too.
(RES, BND), LAM = weighting_inputs(np)
GOLDEN = {name: value[1] for name, value in WEIGHTING_GOLDEN.items() if name != "grad-norm"}


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
    np.testing.assert_allclose(new, WEIGHTING_GOLDEN["grad-norm"], rtol=1e-12)


def test_conformance_kit_weighting_check_passes_in_numpy():
    check_weighting_golden(np)


def test_code_fixed_point_is_the_square_root_of_the_paper_ratio():
    """Spec 3.2.2: dividing by grad(lambda L_b) makes lambda* = sqrt(r), r = max|g_r| / mean of layer means."""
    lam = np.array([1.0, 1.0])
    for _ in range(400):
        lam = get_weighting("code").update(np, [RES, BND], lam)
    assert lam[1] == pytest.approx(np.sqrt(4 / 0.75), rel=1e-6)


def test_alpha_override_and_unknown_variant():
    new = get_weighting("code").update(np, [RES, BND], LAM, alpha=1.0)
    assert new[1] == pytest.approx(4 / 1.5)
    with pytest.raises(UsageError, match="choose one of: code, code-cavity, code-global, grad-norm, mean, ntk, paper, relobralo"):
        get_weighting("papr")
    assert set(WEIGHTINGS) == {"code", "paper", "code-global", "code-cavity", "mean", "grad-norm", "relobralo", "ntk"}
