"""Initial parameters drawn once from the seed with numpy, the same for every backend.

Glorot-normal weights, std = sqrt(2 / (fan_in + fan_out)) (the authors' ``xavier_init``, not
truncated), zero biases, and for the gated net two encoders whose *biases are Glorot-normal too*
(drawn as 1 x width matrices, spec 2.3). Draw order: W0..WL, then E1, c1, E2, c2, so M1 and M3
with the same seed share their MLP weights.
"""

from __future__ import annotations

import numpy as np

from gradpath.problems.errors import UsageError


def glorot_normal(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """A (fan_in, fan_out) float64 matrix of N(0, 2 / (fan_in + fan_out)) entries."""
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


def init_params(layers: tuple[int, ...], net: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Initial parameters by name: ``W{l}``, ``b{l}`` per layer, plus ``E1, c1, E2, c2`` if gated.

    Args:
        layers: ``(inputs, hidden..., outputs)``.
        net: ``"mlp"`` or ``"gated"``.
        rng: the seed's initialisation stream.
    """
    if net == "gated" and len(set(layers[1:-1])) != 1:
        raise UsageError(f"the gated net needs one width for all hidden layers, got {layers[1:-1]}")
    params: dict[str, np.ndarray] = {}
    for l, (fan_in, fan_out) in enumerate(zip(layers[:-1], layers[1:])):
        params[f"W{l}"] = glorot_normal(rng, fan_in, fan_out)
        params[f"b{l}"] = np.zeros(fan_out)
    if net == "gated":
        width = layers[1]
        for e in ("1", "2"):
            params[f"E{e}"] = glorot_normal(rng, layers[0], width)
            params[f"c{e}"] = glorot_normal(rng, 1, width)[0]
    return params


def weight_keys(params: dict) -> list[str]:
    """Names of the MLP weight matrices W0..WL in layer order (what the authors' statistics use)."""
    return sorted((k for k in params if k.startswith("W")), key=lambda k: int(k[1:]))


def layer_sizes(problem_layers: tuple[int, ...], width: int | None, depth: int | None) -> tuple[int, ...]:
    """The problem's default network with the hidden width and/or number of hidden layers replaced."""
    hidden = list(problem_layers[1:-1])
    width = width if width is not None else hidden[0]
    depth = depth if depth is not None else len(hidden)
    return (problem_layers[0], *([width] * depth), problem_layers[-1])
