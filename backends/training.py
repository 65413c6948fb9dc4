"""The framework-free training loop: seed -> weights and batches -> chunks of compiled steps -> history.

Both backends go through this one loop, so logging, timing, divergence and the metric are the same
for every framework. It knows problems and backends, never the suite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends import get_backend
from backends.data import draw_batches, seed_streams
from backends.init import init_params
from backends.protocol import Trainer
from backends.settings import TrainSettings
from problems.core import Problem


@dataclass
class TrainResult:
    """Everything one run produced.

    Attributes:
        history: one dict per logged step (see :func:`train`).
        summary: final error, steps, timings, divergence.
        params: final parameters and loss weights (numpy).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate(problem: Problem, trainer: Trainer, state: Any, x: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The problem's metrics of the current network on the points ``x`` against ``ref``."""
    d = trainer.predict(state, x, problem.solution_needs)
    pred = problem.solution(np, x, {k: v.astype(np.float64) for k, v in d.items()})
    return problem.metrics(pred, ref)


def train(problem: Problem, settings: TrainSettings, backend: str,
          on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train one PINN.

    Args:
        problem: the PDE.
        settings: method, network, optimiser and data settings.
        backend: registered backend name (``jax``, ``torch``, ...).
        on_log: called with each history row as soon as it exists (the suite writes it to disk).

    Returns:
        A TrainResult. History rows hold ``step`` (steps done), ``seconds`` (training time so far,
        compile and evaluation excluded), ``loss_<term>`` (unweighted, at that step's batch),
        ``weight_<term>`` (lambda after the step) and the problem's metrics on its test grid.
        ``summary["diverged"]`` is True if a loss became non-finite; training stops there and
        ``summary["diverged_at_step"]`` is the 0-based index of that step (so ``steps`` = index + 1).
        ``ms_per_step`` is the median over full chunks of chunk time / chunk steps.
    """
    impl = get_backend(backend)
    device = impl.resolve_device(settings.device)
    streams = seed_streams(settings.seed)
    params = init_params(settings.layers_for(problem), settings.method_spec.net, streams["init"])
    mu, sigma = problem.normalisation(streams["normalisation"])
    trainer = impl.trainer(problem, settings, device)
    state = trainer.init(params, mu, sigma)
    x_test = problem.test_grid()
    ref = problem.reference(x_test)
    names = problem.term_names()
    chunk = min(settings.log_every, settings.steps)

    warm_batches = draw_batches(problem, np.random.default_rng(12345), chunk, settings.batch_size, settings.dtype)
    compile_seconds = trainer.warmup(state, warm_batches)

    result = TrainResult()
    done, executed, seconds, chunk_ms, diverged_at = 0, 0, 0.0, [], None
    wall0 = time.perf_counter()
    while done < settings.steps:
        steps = min(chunk, settings.steps - done)
        batches = draw_batches(problem, streams["batches"], steps, settings.batch_size, settings.dtype)
        t0 = time.perf_counter()
        state, out = trainer.train(state, batches, done)
        trainer.sync()
        elapsed = time.perf_counter() - t0
        seconds += elapsed
        executed += steps
        if steps == chunk:
            chunk_ms.append(1e3 * elapsed / steps)
        bad = ~np.isfinite(out.losses).all(axis=1)
        if bad.any():
            diverged_at = done + int(np.argmax(bad))
            steps = int(np.argmax(bad)) + 1
        done += steps
        last = min(steps, len(out.losses)) - 1
        row: dict[str, Any] = {"step": done, "seconds": seconds}
        row.update({f"loss_{n}": float(v) for n, v in zip(names, out.losses[last])})
        row.update({f"weight_{n}": float(v) for n, v in zip(names, out.weights[last])})
        row.update(evaluate(problem, trainer, state, x_test, ref) if diverged_at is None else
                   {m: float("nan") for m in problem.metrics(ref, ref)})
        result.history.append(row)
        if on_log is not None:
            on_log(row)
        if diverged_at is not None:
            break

    final = result.history[-1]
    # with the input normalisation, the parameters alone reproduce the network (backends.jets)
    result.params = {**trainer.export(state), "norm_mu": mu, "norm_sigma": sigma}
    result.summary = {
        "steps": done,
        "error": final[problem.primary_metric],
        "metric": problem.primary_metric,
        **{k: final[k] for k in problem.metrics(ref, ref)},
        "train_seconds": seconds,
        "wall_seconds": time.perf_counter() - wall0,
        "ms_per_step": float(np.median(chunk_ms)) if chunk_ms else 1e3 * seconds / executed,
        "ms_per_step_mean": 1e3 * seconds / executed,
        "compile_seconds": compile_seconds,
        "diverged": diverged_at is not None,
        "diverged_at_step": diverged_at,
        "device": device,
        "device_name": impl.device_name(device),
    }
    return result
