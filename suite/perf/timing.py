"""How gradpath times training steps: one procedure for ``gradpath bench``, the measurement modules
of ``gradpath.suite.perf`` and the asv suite in ``benchmarks/``.

:func:`prepare` builds a trainer for (problem, method, backend, settings, lanes), initialises it from
the seed's start, and warms it up (compiles) on chunks of ``chunk`` steps; :func:`time_chunks` then
trains chunk after chunk, each ended by ``trainer.sync()``, and returns ms per step of each chunk;
:func:`quartiles` summarises them. :func:`ms_per_step_of_run` reads the same numbers out of a
finished run's history (what ``gradpath bench`` times: the training loop itself).

This module imports nothing of gradpath at module level: the code it times comes in as an
:class:`Api`. The asv suite loads this very file from the working tree and hands it the API of
whatever commit asv installed (benchmarks/compat.py), so every commit is timed by the same
procedure and a change here is not mistaken for a change in the code under test.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _train_chunk(trainer: Any, state: Any, batches: list[np.ndarray], first_step: int) -> tuple[Any, Any]:
    """``trainer.train`` as the backend contract has it: the step count is part of ``state``."""
    return trainer.train(state, batches)


@dataclass(frozen=True)
class Api:
    """The parts of gradpath that :func:`prepare` uses, so that other versions of them can be timed.

    ``train_chunk(trainer, state, batches, first_step)`` runs one chunk; it is a function here because
    the contract's ``train`` once took the first step's index as a third argument.
    """

    get_backend: Callable[[str], Any]
    get_problem: Callable[..., Any]
    settings: Callable[..., Any]  # TrainSettings
    seed_start: Callable[[Any, Any], Any]
    draw_batches: Callable[..., list[np.ndarray]]
    train_chunk: Callable[[Any, Any, list[np.ndarray], int], tuple[Any, Any]] = _train_chunk
    initial_arrays: Callable[..., tuple] | None = None  # needed for lanes only


def current_api() -> Api:
    """This installation's gradpath."""
    from gradpath.backends import get_backend
    from gradpath.backends.data import draw_batches, initial_arrays, seed_start
    from gradpath.backends.settings import TrainSettings
    from gradpath.problems import get_problem

    return Api(get_backend, get_problem, TrainSettings, seed_start, draw_batches, initial_arrays=initial_arrays)


@dataclass
class Prepared:
    """A warmed-up trainer with its state and a pool of batches; ``step`` counts the steps trained."""

    problem: Any
    settings: Any
    trainer: Any
    state: Any
    pool: list[np.ndarray]
    compile_seconds: float
    api: Api
    lanes: int | None = None
    step: int = 0
    device: str = "cpu"

    def batches(self, steps: int) -> list[np.ndarray]:
        """``steps`` steps of batches from the pool, cycling (drawing fresh points is not what is timed)."""
        n = self.pool[0].shape[1 if self.lanes else 0]
        idx = np.arange(self.step, self.step + steps) % n
        return [b[:, idx] if self.lanes else b[idx] for b in self.pool]

    def train(self, steps: int, *, advance: bool = True) -> Any:
        """Train ``steps`` steps (one compiled chunk), wait for the device, and return the chunk's output.

        ``advance=False`` throws the new state away: every call then does the same work from the
        same state (same annealing steps), which is what a per-chunk flop rate needs.
        """
        state, out = self.api.train_chunk(self.trainer, self.state, self.batches(steps), self.step)
        self.trainer.sync()
        if advance:
            self.state = state
            self.step += steps
        return out


def prepare(problem: str | Any, method: str, backend: str, device: str = "cpu", *, chunk: int,
            lanes: int | None = None, seed: int = 0, pool: int = 200, api: Api | None = None,
            **settings: Any) -> Prepared:
    """Build, initialise and warm up (compile) a trainer whose compiled call runs ``chunk`` steps.

    ``problem`` is a name or a Problem; ``settings`` override TrainSettings' defaults (the paper's:
    float32, batch 128), the step compiled unless ``compile`` says otherwise (these timings compare
    compiled steps, whatever ``--compile auto`` would choose). ``lanes`` seeds (``seed``,
    ``seed + 1``, ...) train as one vectorised program; they share the pool of batches. Raises the
    backend's UsageError for an absent device.
    """
    api = api or current_api()
    impl = api.get_backend(backend)
    device = impl.resolve_device(device)
    if isinstance(problem, str):
        problem = api.get_problem(problem)
    options = {"method": method, "device": device, "seed": seed, "log_every": chunk, "compile": True, **settings}
    config = api.settings(**options)
    if lanes is None:
        start = api.seed_start(problem, config)
        trainer = impl.trainer(problem, config, device)
        state = trainer.init(start.params, start.mu, start.sigma)
        rng = start.batches
    else:
        starts = [api.seed_start(problem, api.settings(**{**options, "seed": seed + i})) for i in range(lanes)]
        trainer = impl.trainer(problem, config, device, lanes)
        state = trainer.init(*api.initial_arrays(starts, lanes))
        rng = starts[0].batches
    batches = api.draw_batches(problem, rng, max(pool, chunk), config.batch_size, config.dtype)
    if lanes is not None:
        batches = [np.stack([b] * lanes) for b in batches]
    prepared = Prepared(problem, config, trainer, state, batches, 0.0, api, lanes, device=device)
    prepared.compile_seconds = trainer.warmup(state, prepared.batches(chunk))
    return prepared


def time_chunks(prepared: Prepared, chunks: int, chunk: int, *, advance: bool = True) -> list[float]:
    """ms per step of each of ``chunks`` device-synchronised chunks of ``chunk`` steps, in order."""
    samples = []
    for _ in range(chunks):
        t0 = time.perf_counter()
        prepared.train(chunk, advance=advance)
        samples.append(1e3 * (time.perf_counter() - t0) / chunk)
    return samples


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of ``values``; one value is all three, none is NaN."""
    values = list(values)
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def ms_per_step_of_run(history: Sequence[dict[str, Any]], chunk: int) -> list[float]:
    """ms per step of each full ``chunk``-step chunk of a finished run, from its history's cumulative
    training seconds (compile and evaluation are not in them)."""
    out, prev_step, prev_seconds = [], 0, 0.0
    for row in history:
        steps = row["step"] - prev_step
        if steps == chunk:
            out.append(1e3 * (row["seconds"] - prev_seconds) / steps)
        prev_step, prev_seconds = row["step"], row["seconds"]
    return out


def peak_device_mib(backend: str, device: str) -> float | None:
    """The framework's peak device allocation on a GPU in MiB; None on the CPU (or if it does not say)."""
    if device != "cuda":
        return None
    peak = None
    if backend == "torch":
        import torch
        peak = int(torch.cuda.max_memory_allocated())
    elif backend == "jax":
        import jax
        peak = (jax.devices("gpu")[0].memory_stats() or {}).get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


@dataclass
class Timing:
    """What :func:`measure` returns: ms per step per chunk, compile seconds and peak device memory."""

    samples_ms: list[float]
    compile_seconds: float
    peak_device_mib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return quartiles(self.samples_ms)[1]


def measure(problem: str | Any, method: str, backend: str, device: str = "cpu", *, chunk: int = 100,
            chunks: int = 5, lanes: int | None = None, api: Api | None = None, **settings: Any) -> Timing:
    """:func:`prepare`, then :func:`time_chunks`: the whole procedure in one call."""
    prepared = prepare(problem, method, backend, device, chunk=chunk, lanes=lanes, api=api, **settings)
    samples = time_chunks(prepared, chunks, chunk)
    return Timing(samples, prepared.compile_seconds, peak_device_mib(backend, prepared.device))
