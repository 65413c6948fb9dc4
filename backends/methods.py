"""Methods M1-M4 of the paper (Table 1) as data, and the network forms they can use."""

from __future__ import annotations

from dataclasses import dataclass

from gradpath.problems.errors import unknown_choice


@dataclass(frozen=True)
class Method:
    """One row of the paper's Table 1.

    Attributes:
        name: ``M1`` .. ``M4``.
        net: ``"mlp"`` (plain tanh MLP) or ``"gated"`` (the improved, gated architecture).
        anneal: whether the loss weights are annealed (Algorithm 1) or stay 1.
        description: the paper's wording.
    """

    name: str
    net: str
    anneal: bool
    description: str


METHODS: dict[str, Method] = {
    "M1": Method("M1", "mlp", False, "plain PINN (Raissi et al.)"),
    "M2": Method("M2", "mlp", True, "M1 + learning-rate annealing of the loss weights (Alg. 1)"),
    "M3": Method("M3", "gated", False, "M1 + improved fully-connected (gated) architecture"),
    "M4": Method("M4", "gated", True, "M2 + M3"),
}

# Gated-network forms (spec 4.2-4.3). Default "code": what the authors' code computes since the
# July 2021 fix; "paper": eqs. 43-48 as printed (first hidden layer ungated, U and V swapped);
# "code-2020": the buggy second branch tanh(1 - H W + b) of the first public code, for ablations.
GATES: dict[str, str] = {
    "code": "every hidden layer gated: H <- Z*U + (1-Z)*V, Z = tanh(H W + b) (authors' code, default)",
    "paper": "eqs. 43-48 as printed: H1 = tanh(X W + b) ungated, then H <- (1-Z)*U + Z*V",
    "code-2020": "authors' code before the July 2021 fix: H <- Z*U + tanh(1 - H W + b)*V",
}


def get_method(name: str) -> Method:
    """The method called ``name`` (M1-M4)."""
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    return METHODS[name]


def check_gate(name: str) -> str:
    """Return ``name`` if it is a known gated-network form, else raise a UsageError."""
    if name not in GATES:
        raise unknown_choice("gate form", name, GATES)
    return name
