"""Replay the first steps of a run in any backend, for cross-backend and cross-device comparisons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradpath.backends import get_backend
from gradpath.backends.data import draw_batches, seed_start
from gradpath.backends.settings import TrainSettings
from gradpath.problems.core import Problem


@dataclass
class Replay:
    """What the first steps produced, as numpy arrays.

    Attributes:
        losses, weights: ``(steps, n_terms)`` per-step unweighted losses and lambdas.
        final_losses: term losses at the parameters after the steps, on the next step's batch.
        gradients: each term's parameter gradients there.
        params: the parameters after the steps (and ``loss_weights``).
    """

    losses: np.ndarray
    weights: np.ndarray
    final_losses: np.ndarray
    gradients: list[dict[str, np.ndarray]]
    params: dict[str, np.ndarray]

    def max_relative_difference(self, other: Replay) -> dict[str, float]:
        """Largest difference of each quantity, relative to the largest magnitude in ``other``."""
        def rel(a, b):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))

        out = {"losses": rel(self.losses, other.losses), "weights": rel(self.weights, other.weights),
               "final_losses": rel(self.final_losses, other.final_losses)}
        out["gradients"] = max(rel(g[k], h[k]) for g, h in zip(self.gradients, other.gradients) for k in h)
        out["params"] = max(rel(self.params[k], other.params[k]) for k in other.params)
        return out


def replay(backend: str, problem: Problem, settings: TrainSettings, steps: int = 100, device: str = "cpu") -> Replay:
    """Run the first ``steps`` steps of the run ``settings`` describes, in one chunk."""
    trainer = get_backend(backend).trainer(problem, settings, get_backend(backend).resolve_device(device))
    start = seed_start(problem, settings)
    state = trainer.init(start.params, start.mu, start.sigma)
    batches = draw_batches(problem, start.batches, steps + 1, settings.batch_size, settings.dtype)
    state, out = trainer.train(state, [b[:steps] for b in batches])
    losses, grads = trainer.gradients(state, [b[steps] for b in batches])
    return Replay(out.losses, out.weights, losses, grads, trainer.export(state))
