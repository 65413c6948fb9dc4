"""What the asv benchmarks share: a compiled trainer for one (problem, method, backend:device).

Append-only, as numpy's benchmark inputs: a benchmark that exists keeps meaning what it meant,
so change nothing here that an existing benchmark uses; add new functions instead.
Frameworks are imported only when :func:`prepare` runs (inside ``setup``), so ``asv check``
passes in an environment without jax or torch.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradpath.backends import get_backend
from gradpath.backends.data import draw_batches, seed_start
from gradpath.backends.settings import TrainSettings
from gradpath.problems import get_problem
from gradpath.problems.core import Problem
from gradpath.problems.errors import UsageError

SEED = 0
PROBLEMS = ["helmholtz", "klein-gordon"]
METHODS = ["M1", "M2", "M3", "M4"]
# "framework:device", as scipy's array-API benchmarks; a device that is absent is a skip
TARGETS = ["jax:cpu", "torch:cpu", "jax:cuda", "torch:cuda"]
TIMEOUT = 600  # seconds; a cold torch.compile of M4 takes about a minute on 2 cores


@dataclass
class Prepared:
    """A trainer with its state and a pool of batches; ``step`` counts the steps trained."""

    problem: Problem
    settings: TrainSettings
    trainer: Any
    state: Any
    pool: list[np.ndarray]
    compile_seconds: float
    step: int = 0

    def batches(self, steps: int) -> list[np.ndarray]:
        """``steps`` steps of batches from the pool, cycling (fresh points are not what is timed)."""
        n = self.pool[0].shape[0]
        first = self.step % n
        idx = np.arange(first, first + steps) % n
        return [b[idx] for b in self.pool]

    def train(self, steps: int) -> None:
        """Train ``steps`` steps (one compiled chunk) and wait for the device."""
        self.state, _ = self.trainer.train(self.state, self.batches(steps), self.step)
        self.trainer.sync()
        self.step += steps


def settings_for(method: str, target: str, **overrides: Any) -> TrainSettings:
    """The paper's settings (float32, batch 128) for ``method`` on ``target``'s device, the torch step
    compiled (``--compile on``: these benchmarks time the compiled step, whatever auto would choose)."""
    _, device = target.split(":")
    return TrainSettings(method=method, device=device, seed=SEED, **{"compile": "on", **overrides})


def backend_for(target: str) -> tuple[Any, str]:
    """The backend object and resolved device of ``"framework:device"``; NotImplementedError (asv's skip) if absent."""
    name, device = target.split(":")
    try:
        impl = get_backend(name)
        return impl, impl.resolve_device(device)
    except UsageError as exc:
        raise NotImplementedError(str(exc)) from None


def prepare(problem_name: str, method: str, target: str, *, chunk: int, pool: int = 200) -> Prepared:
    """Build, initialise and compile (warm up) a trainer whose compiled call runs ``chunk`` steps."""
    impl, device = backend_for(target)
    problem = get_problem(problem_name)
    settings = settings_for(method, target, log_every=chunk)
    start = seed_start(problem, settings)
    trainer = impl.trainer(problem, settings, device)
    state = trainer.init(start.params, start.mu, start.sigma)
    batches = draw_batches(problem, start.batches, max(pool, chunk), settings.batch_size, settings.dtype)
    seconds = trainer.warmup(state, [b[:chunk] for b in batches])
    return Prepared(problem, settings, trainer, state, batches, seconds)


def median_ms_per_step(prepared: Prepared, chunks: int, chunk: int) -> float:
    """Median over ``chunks`` device-synchronised chunks of ``chunk`` steps of ms per step."""
    times = []
    for _ in range(chunks):
        t0 = time.perf_counter()
        prepared.train(chunk)
        times.append(1e3 * (time.perf_counter() - t0) / chunk)
    return statistics.median(times)
