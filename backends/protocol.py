"""The contract every backend fulfils (typing only; imports no framework).

A backend turns (problem, settings) into a :class:`Trainer`: explicit state in, state out, as in
optax. Everything framework-free (weights, batches, the training loop, logging, divergence) lives
once in ``gradpath.backends.training``, and the maths of a step once in ``gradpath.backends.step``;
a backend owns how the step is differentiated, compiled and batched. ``docs/adding-a-backend.md``
walks through it; ``gradpath.backends.conformance.check_contract`` checks it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gradpath.backends.settings import TrainSettings
from gradpath.problems.core import Problem

State = Any  # backend-specific: parameters, Adam moments, loss weights, step count


@dataclass(frozen=True)
class ChunkOutput:
    """What a chunk of training steps reports, as numpy arrays.

    Attributes:
        losses: ``(steps, n_terms)`` unweighted term losses, each evaluated in its step before the update.
        weights: ``(steps, n_terms)`` loss weights (lambda) in force after each step.

    A multi-seed trainer (``lanes=n``) puts a seed axis first: ``(n, steps, n_terms)``.
    """

    losses: np.ndarray
    weights: np.ndarray


class Trainer(Protocol):
    """Compiled training for one problem and one set of settings on one device.

    A backend with ``supports_lanes = True`` also builds multi-seed trainers (``lanes=n``): then
    every array in and out gets a leading seed axis of length n (parameters, ``mu``/``sigma``,
    batches ``(n, steps, regions, batch, d)``, predictions, gradients, export), except the test
    points ``x`` of ``predict``, which all seeds share.
    """

    def init(self, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray) -> State:
        """State from float64 numpy parameters and input normalisation (cast to the run's dtype)."""

    def warmup(self, state: State, batches: list[np.ndarray]) -> float:
        """Compile everything a run will call; return the seconds it took. ``state`` is not changed."""

    def train(self, state: State, batches: list[np.ndarray]) -> tuple[State, ChunkOutput]:
        """Run ``len(batches[0])`` steps (``batches`` as from gradpath.backends.data.draw_batches).

        The step count is part of ``state``: which steps anneal follows from it, not from the caller.
        """

    def predict(self, state: State, x: np.ndarray, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Derivative keys of the trained network at ``x`` ``(n, d)`` as numpy ``(n,)`` arrays."""

    def gradients(self, state: State, batch: list[np.ndarray]) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
        """Unweighted term losses and each term's parameter gradients on one step's batch."""

    def export(self, state: State) -> dict[str, np.ndarray]:
        """Parameters (``W0``, ``b0``, ...) and ``loss_weights`` as numpy arrays."""

    def snapshot(self, state: State) -> dict[str, np.ndarray]:
        """Every array of ``state`` as numpy, exactly, by path (``params/W0``, ``m/W0``, ``weights``, ``count``, ...).

        Required: checkpoints are taken of it. A multi-seed trainer's arrays carry the seed axis,
        except ``count`` (gradpath.backends.checkpoint.SHARED).
        """

    def restore(self, arrays: dict[str, np.ndarray]) -> State:
        """The state :meth:`snapshot` was taken of (on this trainer's device, dtypes as saved). Required."""

    def sync(self) -> None:
        """Block until the device has finished all queued work (for honest timings)."""

    # Optional, for trainers that can run a step more than one way (torch: compiled, traced, eager):
    #   compilation: dict[str, Any]  -- ``route`` taken and ``reason``; the suite puts it in the manifest
    #   keep_route(route: str) -> None  -- run by this route (a resumed run goes on as its checkpoint ran)


class HessianMatmat(Protocol):
    """The optional ``Backend.hessian_matmat`` hook: Hessian-vector products of one loss.

    gradpath.backends.diagnostics.hessian_operator reaches it through the registry; the loss is
    gradpath.backends.diagnostics.flat_loss in the backend's ``xp``.
    """

    def __call__(self, problem: Problem, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray,
                 batch: Sequence[np.ndarray], weights: np.ndarray, keys: Sequence[str], *,
                 index: int | None, net: str, gate: str,
                 dtype: str) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
        """``(n, matmat)``: the Hessian of ``weights[index] * L_index`` (or of sum_i weights_i L_i if
        ``index`` is None) w.r.t. the parameters ``keys``, as ``V (n, k) -> H V (n, k)`` in float64 numpy."""


class Backend(Protocol):
    """A framework: names its devices and builds trainers.

    Optional members:
        methods: ``tuple[str, ...]``, the methods (M1-M4, gradpath.backends.methods.METHODS) its
            trainers implement; all of them when absent (gradpath.backends.supported_methods).
        hessian_matmat: a :class:`HessianMatmat`, for the Hessian diagnostics (sigma_max, spectra).
    """

    name: str
    # True if ``trainer(problem, settings, device, lanes=n)`` trains n seeds at once; False: seeds train in turn
    supports_lanes: bool

    def resolve_device(self, device: str) -> str:
        """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one is a UsageError."""

    def device_name(self, device: str) -> str:
        """Human-readable name of the device (CPU model or GPU name)."""

    def versions(self) -> dict[str, str]:
        """Versions of the framework packages, for the run manifest."""

    def trainer(self, problem: Problem, settings: TrainSettings, device: str) -> Trainer:
        """Build (but not yet compile) a trainer; with ``supports_lanes``, also takes ``lanes: int | None``."""
