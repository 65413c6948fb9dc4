"""The framework-free training loop: seed -> weights and batches -> chunks of compiled steps -> history.

Both backends go through this one loop, so logging, timing, divergence and the metric are the same
for every framework. It knows problems and backends, never the suite.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradpath.backends import get_backend
from gradpath.backends.checkpoint import Checkpoint, CheckpointMismatch, check_fits, one_seed, stack
from gradpath.backends.data import draw_batches, initial_arrays, seed_start
from gradpath.backends.diagnostics import GradientRecord, gradient_histograms, gradient_statistics, parameter_keys, weighted
from gradpath.backends.protocol import Trainer
from gradpath.backends.settings import TrainSettings
from gradpath.problems.core import Problem
from gradpath.problems.errors import UsageError


@dataclass
class TrainResult:
    """Everything one run produced.

    Attributes:
        history: one dict per logged step (see :func:`train`).
        summary: final error, steps, timings, divergence.
        params: final parameters and loss weights (numpy).
        gradients: per-layer gradient histograms at the gradient records (None when not recorded).
        compilation: how the backend ran the steps (``route``: compiled, traced or eager, and ``reason``),
            from its trainer's optional ``compilation`` attribute; the suite puts it in the manifest.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    gradients: GradientRecord | None = None
    compilation: dict[str, Any] | None = None


def _evaluate_lanes(problem: Problem, trainer: Trainer, state: Any, x: np.ndarray, ref: np.ndarray,
                    lanes: int | None) -> list[dict[str, float]]:
    """The problem's metrics of each seed's network on the points ``x`` against ``ref`` (one dict per seed)."""
    d = trainer.predict(state, x, problem.solution_needs)
    per_lane = [d] if lanes is None else [{k: v[i] for k, v in d.items()} for i in range(lanes)]
    return [problem.metrics(problem.solution(np, x, {k: v.astype(np.float64) for k, v in one.items()}), ref)
            for one in per_lane]


def supports_lanes(backend: str) -> bool:
    """Whether ``backend`` can train several seeds in one vectorised program (``lanes`` in its trainer)."""
    return bool(getattr(get_backend(backend), "supports_lanes", False))


def check_same_but_seed(settings: Sequence[TrainSettings]) -> None:
    """Raise a UsageError unless every settings object equals the first one apart from ``seed``."""
    if not settings:
        raise UsageError("train_seeds needs at least one settings object")
    base = dataclasses.asdict(settings[0])
    for other in settings[1:]:
        differ = sorted(k for k, v in dataclasses.asdict(other).items() if k != "seed" and base[k] != v)
        if differ:
            raise UsageError(f"seeds trained together must share every other setting; these differ: {', '.join(differ)}")
    seeds = [s.seed for s in settings]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds trained together must differ; got {seeds}")


def train(problem: Problem, settings: TrainSettings, backend: str,
          on_log: Callable[[dict[str, Any]], None] | None = None, *, gradient_every: int = 0,
          resume: Checkpoint | None = None, on_checkpoint: Callable[[Checkpoint], None] | None = None,
          checkpoint_every: float = 600.0) -> TrainResult:
    """Train one PINN.

    Args:
        problem: the PDE.
        settings: method, network, optimiser and data settings.
        backend: registered backend name (``jax``, ``torch``, ...).
        on_log: called with each history row as soon as it exists (the suite writes it to disk).
        gradient_every: steps between gradient records (0: none); see :func:`train_seeds`.
        resume, on_checkpoint, checkpoint_every: go on from a checkpoint, and take them; see :func:`train_seeds`.

    Returns:
        A TrainResult. History rows hold ``step`` (steps done), ``seconds`` (training time so far,
        compile and evaluation excluded), ``loss_<term>`` (unweighted, at that step's batch),
        ``weight_<term>`` (lambda after the step) and the problem's metrics on its test grid.
        ``summary["diverged"]`` is True if a loss became non-finite; training stops there and
        ``summary["diverged_at_step"]`` is the 0-based index of that step (so ``steps`` = index + 1).
        ``ms_per_step`` is the median over full chunks of chunk time / chunk steps.
    """
    log = None if on_log is None else (lambda lane, row: on_log(row))
    keep = None if on_checkpoint is None else (lambda lane, checkpoint: on_checkpoint(checkpoint))
    return train_seeds(problem, [settings], backend, log, vectorise=False, gradient_every=gradient_every,
                       resume=None if resume is None else [resume], on_checkpoint=keep,
                       checkpoint_every=checkpoint_every)[0]


def train_seeds(problem: Problem, settings: Sequence[TrainSettings], backend: str,
                on_log: Callable[[int, dict[str, Any]], None] | None = None, *,
                vectorise: bool = True, gradient_every: int = 0,
                resume: Sequence[Checkpoint] | None = None,
                on_checkpoint: Callable[[int, Checkpoint], None] | None = None,
                checkpoint_every: float = 600.0) -> list[TrainResult]:
    """Train several seeds of one configuration, as one vectorised program where the backend can.

    Each seed gets exactly the weights, normalisation and batches of its own :func:`train` run,
    and its result is the same up to floating-point rounding (the batched kernels may sum in
    another order). A seed whose loss becomes non-finite is marked diverged and logs no more;
    the others go on. Training time is shared: ``seconds`` and ``ms_per_step`` are those of the
    vectorised step (all seeds), ``vectorised_seeds`` says how many seeds shared it.

    Args:
        problem: the PDE.
        settings: one TrainSettings per seed, equal apart from ``seed``.
        backend: registered backend name.
        on_log: called with ``(index into settings, history row)`` as each row exists.
        vectorise: False trains the seeds one after the other (so does a backend without lanes).
        gradient_every: at the first logged step at or past every multiple of this many steps, and
            at the last, the gradients of every lambda-weighted loss term w.r.t. each weight matrix
            on that step's batch (as the authors' code, spec 2.5): their per-layer statistics go into
            the history row (``grad_max_<term>_W<l>`` etc., see
            :func:`gradpath.backends.diagnostics.gradient_statistics`; NaN in the other rows, so every row
            has the same columns) and their histograms into ``TrainResult.gradients``. 0: none.
        resume: one :class:`~gradpath.backends.checkpoint.Checkpoint` per settings object, all at the same
            step: training goes on from there exactly as if it had never stopped (the rows before
            it are not logged again; ``summary["resumed_at_steps"]`` lists every such step).
        on_checkpoint: called with ``(index into settings, Checkpoint)`` for every seed at the end of a chunk, once
            ``checkpoint_every`` wall-clock seconds have passed since the start or the last one
            (never after the last chunk: the result itself follows). Backends without
            ``Trainer.snapshot`` are not checkpointed.
        checkpoint_every: seconds between checkpoints (0: after every chunk but the last).

    Returns:
        One TrainResult per settings object, in order (see :func:`train`).

    Raises:
        CheckpointMismatch: ``resume`` does not fit these settings (steps, seeds or state layout).
    """
    settings = list(settings)
    check_same_but_seed(settings)
    if resume is not None and len(resume) != len(settings):
        raise CheckpointMismatch(f"{len(resume)} checkpoints for {len(settings)} seeds; give one per seed")
    if len(settings) > 1 and not (vectorise and supports_lanes(backend)):
        return [train_seeds(problem, [s], backend, None if on_log is None else (lambda _, row, i=i: on_log(i, row)),
                            vectorise=False, gradient_every=gradient_every,
                            resume=None if resume is None else [resume[i]],
                            on_checkpoint=None if on_checkpoint is None else (lambda _, c, i=i: on_checkpoint(i, c)),
                            checkpoint_every=checkpoint_every)[0]
                for i, s in enumerate(settings)]
    # a seed of a vectorised run goes on vectorised (lanes=1), as its checkpoint was computed
    vectorised = len(settings) > 1 or (resume is not None and resume[0].lanes is not None)
    lanes = len(settings) if vectorised else None
    first = settings[0]
    impl = get_backend(backend)
    device = impl.resolve_device(first.device)
    starts = [seed_start(problem, s) for s in settings]
    trainer = impl.trainer(problem, first, device) if lanes is None else impl.trainer(problem, first, device, lanes)
    route = resume[0].compile_route if resume is not None else None  # the route a checkpoint fixes
    if route is not None and hasattr(trainer, "keep_route"):
        # go on as the checkpointed process ran: the routes round differently
        trainer.keep_route(route)
    else:
        route = None
    state = trainer.init(*initial_arrays(starts, lanes))
    can_checkpoint = hasattr(trainer, "snapshot") and hasattr(trainer, "restore")
    if resume is not None:
        if not can_checkpoint:
            raise CheckpointMismatch(f"backend {backend!r} cannot restore a checkpoint (its trainer has no restore)")
        state = _restored(trainer, state, resume, first, lanes)
    x_test = problem.test_grid()
    ref = problem.reference(x_test)
    names = problem.term_names()
    chunk = min(first.log_every, first.steps)

    warm = draw_batches(problem, np.random.default_rng(12345), chunk, first.batch_size, first.dtype)
    compile_seconds = trainer.warmup(state, warm if lanes is None else [np.stack([b] * lanes) for b in warm])

    n = len(settings)
    results = [TrainResult() for _ in settings]
    keys = parameter_keys(starts[0].params, "weights")
    if gradient_every > 0:
        for result in results:
            result.gradients = GradientRecord(names, tuple(keys), tuple(int(starts[0].params[k].size) for k in keys))
        blank = dict.fromkeys(gradient_statistics([{k: np.ones(1) for k in keys}] * len(names), names, keys), float("nan"))
    done = [0] * n  # steps each seed has taken (a diverged seed stops counting)
    diverged_at: list[int | None] = [None] * n
    nan_metrics = {m: float("nan") for m in problem.metrics(ref, ref)}
    total, executed, seconds, chunk_ms, wall_before, resumed_at = 0, 0, 0.0, [], 0.0, []
    if resume is not None:  # go on where the checkpoints stopped; the seeds share the loop's counters
        nan_terms = [float("nan")] * len(names)
        _check_history_fits(resume, list(_history_row(0, 0.0, names, nan_terms, nan_terms, nan_metrics,
                                                      blank if gradient_every > 0 else None)))
        c0 = resume[0]
        total, executed, seconds, chunk_ms, wall_before = c0.step, c0.executed, c0.seconds, list(c0.chunk_ms), c0.wall
        compile_seconds += c0.compile_seconds
        resumed_at = [*c0.resumed_at, c0.step]
        for i, c in enumerate(resume):
            starts[i].batches.bit_generator.state = c.batches
            done[i], diverged_at[i] = c.done, c.diverged_at
            results[i].history = [dict(row) for row in c.history]
            if gradient_every > 0 and c.gradients is not None:
                results[i].gradients = c.gradients
    wall0 = time.perf_counter()
    last_checkpoint = wall0
    while total < first.steps and any(d is None for d in diverged_at):
        steps = min(chunk, first.steps - total)
        per_seed = [draw_batches(problem, st.batches, steps, first.batch_size, first.dtype) for st in starts]
        batches = per_seed[0] if lanes is None else [np.stack(b) for b in zip(*per_seed)]
        t0 = time.perf_counter()
        state, out = trainer.train(state, batches, total)
        trainer.sync()
        elapsed = time.perf_counter() - t0
        seconds += elapsed
        executed += steps
        if steps == chunk:
            chunk_ms.append(1e3 * elapsed / steps)
        losses = out.losses[None] if lanes is None else out.losses
        weights = out.weights[None] if lanes is None else out.weights
        live = [i for i in range(n) if diverged_at[i] is None]
        metrics = _evaluate_lanes(problem, trainer, state, x_test, ref, lanes)
        record_gradients = gradient_every > 0 and ((total + steps) // gradient_every > total // gradient_every
                                                   or total + steps == first.steps)
        stats = _gradient_record(trainer, state, per_seed, weights[:, steps - 1], names, keys, lanes) \
            if record_gradients else None
        for i in live:
            bad = ~np.isfinite(losses[i]).all(axis=1)
            taken = steps
            if bad.any():
                taken = int(np.argmax(bad)) + 1
                diverged_at[i] = total + taken - 1
            done[i] = total + taken
            fresh_stats = stats is not None and diverged_at[i] is None
            row = _history_row(done[i], seconds, names, losses[i, taken - 1], weights[i, taken - 1],
                               metrics[i] if diverged_at[i] is None else nan_metrics,
                               (stats[i][0] if fresh_stats else blank) if gradient_every > 0 else None)
            if fresh_stats:
                results[i].gradients.add(done[i], weights[i, steps - 1], stats[i][1])
            results[i].history.append(row)
            if on_log is not None:
                on_log(i, row)
        total += steps
        going_on = total < first.steps and any(d is None for d in diverged_at)
        if on_checkpoint is not None and can_checkpoint and going_on \
                and time.perf_counter() - last_checkpoint >= checkpoint_every:
            snapshot = trainer.snapshot(state)
            wall = wall_before + time.perf_counter() - wall0
            for i in range(n):
                on_checkpoint(i, Checkpoint(
                    step=total, state=one_seed(snapshot, None if lanes is None else i),
                    batches=starts[i].batches.bit_generator.state, done=done[i], diverged_at=diverged_at[i],
                    seconds=seconds, executed=executed, chunk_ms=list(chunk_ms), wall=wall,
                    compile_seconds=compile_seconds, history=[dict(row) for row in results[i].history],
                    gradients=results[i].gradients, resumed_at=list(resumed_at), lanes=lanes,
                    compile_route=_compilation(trainer, route).get("route")))
            last_checkpoint = time.perf_counter()

    exported = trainer.export(state)
    wall = wall_before + time.perf_counter() - wall0
    for i, result in enumerate(results):
        final = result.history[-1]
        mine = exported if lanes is None else {k: v[i] for k, v in exported.items()}
        # with the input normalisation, the parameters alone reproduce the network (gradpath.backends.jets)
        result.params = {**mine, "norm_mu": starts[i].mu, "norm_sigma": starts[i].sigma}
        result.summary = {
            "steps": done[i],
            "error": final[problem.primary_metric],
            "metric": problem.primary_metric,
            **{k: final[k] for k in nan_metrics},
            "train_seconds": seconds,
            "wall_seconds": wall,
            "ms_per_step": float(np.median(chunk_ms)) if chunk_ms else 1e3 * seconds / executed,
            "ms_per_step_mean": 1e3 * seconds / executed,
            "compile_seconds": compile_seconds,
            "diverged": diverged_at[i] is not None,
            "diverged_at_step": diverged_at[i],
            "vectorised_seeds": n,
            "resumed_at_steps": list(resumed_at),
            "device": device,
            "device_name": impl.device_name(device),
        }
        result.compilation = _compilation(trainer, route) or None
    return results


def _compilation(trainer: Trainer, resumed_route: str | None) -> dict[str, Any]:
    """The trainer's ``compilation`` (empty if it has none), saying so where a checkpoint chose the route."""
    about = dict(getattr(trainer, "compilation", None) or {})
    if about and resumed_route is not None and about.get("route") == resumed_route:  # not after a fallback
        about["reason"] = f"{resumed_route}, as the process before the checkpoint ran"
    return about


def _restored(trainer: Trainer, fresh: Any, resume: Sequence[Checkpoint], settings: TrainSettings,
              lanes: int | None) -> Any:
    """The trainer state the checkpoints ``resume`` hold (one per seed), checked against a fresh state."""
    steps = {c.step for c in resume}
    if len(steps) != 1:
        raise CheckpointMismatch(f"seeds trained together must resume from one step; got {sorted(steps)}")
    step = steps.pop()
    if not 0 < step < settings.steps:
        raise CheckpointMismatch(f"a checkpoint at step {step} cannot go on to step {settings.steps}")
    snapshot = stack([c.state for c in resume], lanes)
    check_fits(snapshot, trainer.snapshot(fresh))
    if int(snapshot["count"]) != step:
        raise CheckpointMismatch(f"the checkpoint's step count {int(snapshot['count'])} is not its step {step}")
    return trainer.restore(snapshot)


def _history_row(step: int, seconds: float, names: Sequence[str], losses: Sequence[float],
                 weights: Sequence[float], metrics: dict[str, float],
                 gradients: dict[str, float] | None) -> dict[str, Any]:
    """One logged row of a run's history; its keys, in this order, are the history's columns."""
    row: dict[str, Any] = {"step": step, "seconds": seconds}
    row.update({f"loss_{k}": float(v) for k, v in zip(names, losses)})
    row.update({f"weight_{k}": float(v) for k, v in zip(names, weights)})
    row.update(metrics)
    if gradients is not None:
        row.update(gradients)
    return row


def _check_history_fits(resume: Sequence[Checkpoint], columns: list[str]) -> None:
    """Raise a CheckpointMismatch unless the checkpoints' history rows have this run's columns
    (``columns``: the keys of :func:`_history_row` for this run).

    A gradpath that logs other columns (another metric, gradient statistics of other layers)
    could not append to them: the run would fail at its first row, at every attempt, instead of
    starting afresh. (The gradient statistics' columns name the terms and layers the gradient
    records describe, so this covers those too.)
    """
    if any(list(row) != columns for c in resume for row in c.history):
        raise CheckpointMismatch("the checkpoint's history has other columns than this run logs")


def _gradient_record(trainer: Trainer, state: Any, per_seed: list[list[np.ndarray]], weights: np.ndarray,
                         names: Sequence[str], keys: Sequence[str],
                         lanes: int | None) -> list[tuple[dict[str, float], np.ndarray]]:
    """Per seed: gradient statistics and histograms of grad(lambda_i L_i) on the chunk's last batch."""
    last = [[b[-1] for b in batches] for batches in per_seed]
    batch = last[0] if lanes is None else [np.stack(b) for b in zip(*last)]
    _, grads = trainer.gradients(state, batch)
    per_lane = [grads] if lanes is None else [[{k: g[k][i] for k in g} for g in grads] for i in range(lanes)]
    out = []
    for lane, lam in zip(per_lane, weights):
        lane = weighted(lane, lam)
        out.append((gradient_statistics(lane, names, keys), gradient_histograms(lane, keys)))
    return out
