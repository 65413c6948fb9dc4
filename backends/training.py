"""The framework-free training loop: seed -> weights and batches -> chunks of compiled steps -> history.

Both backends go through this one loop, so logging, timing, divergence and the metric are the same
for every framework. It knows problems and backends, never the suite.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gradpath.backends import get_backend, require_method
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
    declared = getattr(get_backend(backend), "supports_lanes", None)
    if declared not in (True, False):  # required by the contract (conformance.check_contract)
        raise UsageError(f"backend {backend!r} does not declare supports_lanes (True or False), which the backend "
                         f"contract requires (gradpath.backends.protocol.Backend)")
    return declared


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
                checkpoint_every: float = 600.0, probes: Sequence[Probe] = (),
                probe_at_start: bool = False, full_batch: bool = False,
                gradient_parameters: str = "weights") -> list[TrainResult]:
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
            (never after the last chunk: the result itself follows).
        checkpoint_every: seconds between checkpoints (0: after every chunk but the last).
        probes: :class:`Probe` objects called, as the gradient record is, at the first logged step
            at or past every multiple of their ``every`` and at the last step; their values join
            that row (NaN in the others). Chunks are ``log_every`` steps long: a probe that must run
            on exact multiples needs ``log_every`` to divide them (see :func:`log_interval`).
        probe_at_start: also record gradients and run the probes at step 0, before training, on the
            first step's batch, in a history row of its own (losses, weights and metrics NaN).
        full_batch: train on one fixed set of ``batch_size`` points per region (the seed's first
            draw) at every step, instead of fresh points.
        gradient_parameters: the parameters the gradient record covers (``weights``: W0..WL, as
            the authors; ``all``; see :data:`gradpath.backends.diagnostics.PARAMETER_SETS`).

    Returns:
        One TrainResult per settings object, in order (see :func:`train`).

    Raises:
        CheckpointMismatch: ``resume`` does not fit these settings (steps, seeds or state layout).
    """
    settings = list(settings)
    check_same_but_seed(settings)
    require_method(backend, settings[0].method)  # a backend may offer only some of M1-M4 (Backend.methods)
    if resume is not None and len(resume) != len(settings):
        raise CheckpointMismatch(f"{len(resume)} checkpoints for {len(settings)} seeds; give one per seed")
    options = dict(gradient_every=gradient_every, checkpoint_every=checkpoint_every, probes=probes,
                   probe_at_start=probe_at_start, full_batch=full_batch, gradient_parameters=gradient_parameters)
    if len(settings) > 1 and not (vectorise and supports_lanes(backend)):
        return [train_seeds(problem, [s], backend, None if on_log is None else (lambda _, row, i=i: on_log(i, row)),
                            vectorise=False, resume=None if resume is None else [resume[i]],
                            on_checkpoint=None if on_checkpoint is None else (lambda _, c, i=i: on_checkpoint(i, c)),
                            **options)[0]
                for i, s in enumerate(settings)]
    run = _start(problem, settings, backend, resume, gradient_every, probes, full_batch, gradient_parameters)
    loop = _Loop.fresh(len(settings)) if resume is None else _Loop.resumed(run, resume)
    loop.wall0 = loop.last_checkpoint = time.perf_counter()
    while loop.going_on(run):
        per_seed = run.draw(min(run.chunk, run.first.steps - loop.total))
        if probe_at_start and loop.total == 0:
            _log_start(run, per_seed, on_log)
        chunk = _run_chunk(run, loop, per_seed)
        _log_chunk(run, loop, chunk, on_log)
        loop.total += chunk.steps
        if on_checkpoint is not None and loop.going_on(run) \
                and time.perf_counter() - loop.last_checkpoint >= checkpoint_every:
            _checkpoint(run, loop, on_checkpoint)
    return _finish(run, loop)


@dataclass(frozen=True)
class ProbeContext:
    """What a :class:`Probe` sees of one seed at the end of a chunk (or at step 0).

    Attributes:
        problem, settings: the run's problem and (this seed's) settings.
        trainer, state: the trainer and its state after the step; with ``lane`` not None the
            state holds every seed trained together, and this seed is index ``lane``.
        batch: this seed's batch of that step (one array per region, no seed axis).
        weights: this seed's loss weights lambda in force.
        step: steps done.  mu, sigma: the seed's input normalisation.
    """

    problem: Problem
    settings: TrainSettings
    trainer: Trainer
    state: Any
    lane: int | None
    batch: list[np.ndarray]
    weights: np.ndarray
    step: int
    mu: np.ndarray
    sigma: np.ndarray


@runtime_checkable
class Probe(Protocol):
    """A measurement :func:`train_seeds` takes at chunk ends (the diagnostics' sigma_max, say).

    Attributes:
        every: steps between calls (at the first logged step at or past each multiple, and the last).
        columns: the history columns it fills; every row has them (NaN where it did not run).
    """

    every: int
    columns: tuple[str, ...]

    def __call__(self, context: ProbeContext) -> dict[str, float] | None:
        """The values of ``columns`` for this seed now (missing ones and None: NaN)."""


def log_interval(log_every: int, *intervals: int) -> int:
    """The longest log interval (so chunk length) at most ``log_every`` on whose multiples every
    non-zero ``intervals`` falls: chunks then end on each step a probe or gradient record is due."""
    return math.gcd(log_every, *(i for i in intervals if i > 0))


def _due(total: int, steps: int, every: int, last: int) -> bool:
    """Whether a record every ``every`` steps falls in the chunk of ``steps`` after ``total`` (or it ends training)."""
    return every > 0 and ((total + steps) // every > total // every or total + steps == last)


@dataclass
class _Run:
    """What stays fixed while seeds train: problem, trainer, data, and where the results go."""

    problem: Problem
    settings: list[TrainSettings]
    impl: Any
    device: str
    lanes: int | None
    starts: list[Any]
    trainer: Trainer
    state: Any
    route: str | None
    x_test: np.ndarray
    ref: np.ndarray
    names: tuple[str, ...]
    chunk: int
    compile_seconds: float
    results: list[TrainResult]
    nan_metrics: dict[str, float]
    gradient_every: int
    keys: list[str]
    blank: dict[str, float] | None
    probes: Sequence[Probe]
    fixed: list[list[np.ndarray]] | None

    @property
    def first(self) -> TrainSettings:
        return self.settings[0]

    def columns(self) -> list[str]:
        """The history's columns (the keys of every row this run logs)."""
        nan_terms = [float("nan")] * len(self.names)
        return list(self.row(0, 0.0, nan_terms, nan_terms, self.nan_metrics, self.blank, self.blank_probes()))

    def blank_probes(self) -> dict[str, float]:
        return {c: float("nan") for p in self.probes for c in p.columns}

    def row(self, step: int, seconds: float, losses: Sequence[float], weights: Sequence[float],
            metrics: dict[str, float], gradients: dict[str, float] | None, probed: dict[str, float]) -> dict[str, Any]:
        return {**_history_row(step, seconds, self.names, losses, weights, metrics,
                               gradients if self.gradient_every > 0 else None), **probed}

    def draw(self, steps: int) -> list[list[np.ndarray]]:
        """Each seed's batches of the next ``steps`` steps."""
        if self.fixed is not None:  # full batch: the same points at every step
            return [[np.repeat(b, steps, axis=0) for b in fixed] for fixed in self.fixed]
        s = self.first
        return [draw_batches(self.problem, st.batches, steps, s.batch_size, s.dtype) for st in self.starts]


@dataclass
class _Loop:
    """The loop's counters, shared by the seeds trained together (what a checkpoint carries on)."""

    done: list[int]  # steps each seed has taken (a diverged seed stops counting)
    diverged_at: list[int | None]
    total: int = 0
    executed: int = 0
    seconds: float = 0.0
    chunk_ms: list[float] = field(default_factory=list)
    wall_before: float = 0.0
    resumed_at: list[int] = field(default_factory=list)
    wall0: float = 0.0
    last_checkpoint: float = 0.0

    @classmethod
    def fresh(cls, n: int) -> _Loop:
        return cls(done=[0] * n, diverged_at=[None] * n)

    @classmethod
    def resumed(cls, run: _Run, resume: Sequence[Checkpoint]) -> _Loop:
        """Go on where the checkpoints stopped: counters, batch generators, histories and gradient records."""
        _check_history_fits(resume, run.columns())
        c0 = resume[0]
        loop = cls(done=[c.done for c in resume], diverged_at=[c.diverged_at for c in resume], total=c0.step,
                   executed=c0.executed, seconds=c0.seconds, chunk_ms=list(c0.chunk_ms), wall_before=c0.wall,
                   resumed_at=[*c0.resumed_at, c0.step])
        run.compile_seconds += c0.compile_seconds
        for i, c in enumerate(resume):
            run.starts[i].batches.bit_generator.state = c.batches
            run.results[i].history = [dict(row) for row in c.history]
            if run.gradient_every > 0 and c.gradients is not None:
                run.results[i].gradients = c.gradients
        return loop

    def going_on(self, run: _Run) -> bool:
        return self.total < run.first.steps and any(d is None for d in self.diverged_at)


@dataclass
class _Chunk:
    """One chunk's outputs: steps run, each seed's batches, losses and weights ``(seeds, steps, terms)``."""

    steps: int
    per_seed: list[list[np.ndarray]]
    losses: np.ndarray
    weights: np.ndarray


def _start(problem: Problem, settings: list[TrainSettings], backend: str, resume: Sequence[Checkpoint] | None,
           gradient_every: int, probes: Sequence[Probe], full_batch: bool, gradient_parameters: str) -> _Run:
    """Build the trainer, its state (fresh, or restored from ``resume``) and everything the loop reads."""
    # a seed of a vectorised run goes on vectorised (lanes=1), as its checkpoint was computed
    vectorised = len(settings) > 1 or (resume is not None and resume[0].lanes is not None)
    lanes = len(settings) if vectorised else None
    first = settings[0]
    impl = get_backend(backend)
    device = impl.resolve_device(first.device)
    starts = [seed_start(problem, s) for s in settings]
    # full batch: each seed's first draw, before a checkpoint moves its generator on
    fixed = [draw_batches(problem, st.batches, 1, first.batch_size, first.dtype) for st in starts] \
        if full_batch else None
    trainer = impl.trainer(problem, first, device) if lanes is None else impl.trainer(problem, first, device, lanes)
    route = resume[0].compile_route if resume is not None else None  # the route a checkpoint fixes
    if route is not None and hasattr(trainer, "keep_route"):
        # go on as the checkpointed process ran: the routes round differently
        trainer.keep_route(route)
    else:
        route = None
    state = trainer.init(*initial_arrays(starts, lanes))
    if resume is not None:
        state = _restored(trainer, state, resume, first, lanes)
    x_test = problem.test_grid()
    ref = problem.reference(x_test)
    names = problem.term_names()
    chunk = min(first.log_every, first.steps)
    warm = draw_batches(problem, np.random.default_rng(12345), chunk, first.batch_size, first.dtype)
    compile_seconds = trainer.warmup(state, warm if lanes is None else [np.stack([b] * lanes) for b in warm])
    results = [TrainResult() for _ in settings]
    keys = parameter_keys(starts[0].params, gradient_parameters)
    blank = None
    if gradient_every > 0:
        for result in results:
            result.gradients = GradientRecord(names, tuple(keys), tuple(int(starts[0].params[k].size) for k in keys))
        blank = dict.fromkeys(gradient_statistics([{k: np.ones(1) for k in keys}] * len(names), names, keys), float("nan"))
    return _Run(problem=problem, settings=settings, impl=impl, device=device, lanes=lanes, starts=starts,
                trainer=trainer, state=state, route=route, x_test=x_test, ref=ref, names=names, chunk=chunk,
                compile_seconds=compile_seconds, results=results,
                nan_metrics={m: float("nan") for m in problem.metrics(ref, ref)}, gradient_every=gradient_every,
                keys=keys, blank=blank, probes=tuple(probes), fixed=fixed)


def _log_start(run: _Run, per_seed: list[list[np.ndarray]],
               on_log: Callable[[int, dict[str, Any]], None] | None) -> None:
    """The step-0 row: gradient record and probes of the untrained networks on the first step's batch
    (``per_seed``: the first chunk's batches)."""
    first = [[b[:1] for b in batches] for batches in per_seed]
    exported = run.trainer.export(run.state)
    lam = np.asarray(exported["loss_weights"], np.float64).reshape(len(run.settings), -1)
    nan_terms = [float("nan")] * len(run.names)
    stats = _gradient_record(run.trainer, run.state, first, lam, run.names, run.keys, run.lanes) \
        if run.gradient_every > 0 else None
    for i in range(len(run.settings)):
        if stats is not None:
            run.results[i].gradients.add(0, lam[i], stats[i][1])
        row = run.row(0, 0.0, nan_terms, nan_terms, run.nan_metrics, None if stats is None else stats[i][0],
                      _probe(run, i, 0, [b[0] for b in per_seed[i]], lam[i], due=True))
        _append(run, i, row, on_log)


def _run_chunk(run: _Run, loop: _Loop, per_seed: list[list[np.ndarray]]) -> _Chunk:
    """Train on the chunk's batches ``per_seed`` (each seed's, as :meth:`_Run.draw` gave them), timing the steps alone."""
    steps = len(per_seed[0][0])
    batches = per_seed[0] if run.lanes is None else [np.stack(b) for b in zip(*per_seed)]
    t0 = time.perf_counter()
    run.state, out = run.trainer.train(run.state, batches)
    run.trainer.sync()
    elapsed = time.perf_counter() - t0
    loop.seconds += elapsed
    loop.executed += steps
    if steps == run.chunk:
        loop.chunk_ms.append(1e3 * elapsed / steps)
    losses = out.losses[None] if run.lanes is None else out.losses
    weights = out.weights[None] if run.lanes is None else out.weights
    return _Chunk(steps, per_seed, losses, weights)


def _log_chunk(run: _Run, loop: _Loop, chunk: _Chunk, on_log: Callable[[int, dict[str, Any]], None] | None) -> None:
    """Each live seed's row at the chunk's end: divergence, losses, weights, metrics, gradients, probes."""
    steps, total, last = chunk.steps, loop.total, run.first.steps
    live = [i for i in range(len(run.settings)) if loop.diverged_at[i] is None]
    metrics = _evaluate_lanes(run.problem, run.trainer, run.state, run.x_test, run.ref, run.lanes)
    stats = _gradient_record(run.trainer, run.state, chunk.per_seed, chunk.weights[:, steps - 1], run.names,
                             run.keys, run.lanes) if _due(total, steps, run.gradient_every, last) else None
    for i in live:
        bad = ~np.isfinite(chunk.losses[i]).all(axis=1)
        taken = steps
        if bad.any():
            taken = int(np.argmax(bad)) + 1
            loop.diverged_at[i] = total + taken - 1
        loop.done[i] = total + taken
        fine = loop.diverged_at[i] is None
        fresh_stats = stats is not None and fine
        probed = _probe(run, i, loop.done[i], [b[-1] for b in chunk.per_seed[i]], chunk.weights[i, steps - 1],
                        due=fine, total=total, steps=steps)
        row = run.row(loop.done[i], loop.seconds, chunk.losses[i, taken - 1], chunk.weights[i, taken - 1],
                      metrics[i] if fine else run.nan_metrics, stats[i][0] if fresh_stats else run.blank, probed)
        if fresh_stats:
            run.results[i].gradients.add(loop.done[i], chunk.weights[i, steps - 1], stats[i][1])
        _append(run, i, row, on_log)


def _probe(run: _Run, i: int, step: int, batch: list[np.ndarray], weights: np.ndarray, *, due: bool,
           total: int | None = None, steps: int = 0) -> dict[str, float]:
    """Seed ``i``'s probe columns: the values of the probes due now (``total is None``: all), NaN for the rest."""
    values = run.blank_probes()
    for probe in run.probes:
        if not due or (total is not None and not _due(total, steps, probe.every, run.first.steps)):
            continue
        got = probe(ProbeContext(run.problem, run.settings[i], run.trainer, run.state,
                                 None if run.lanes is None else i, batch, np.asarray(weights), step,
                                 run.starts[i].mu, run.starts[i].sigma)) or {}
        values.update({c: float(got[c]) for c in probe.columns if got.get(c) is not None})
    return values


def _append(run: _Run, i: int, row: dict[str, Any], on_log: Callable[[int, dict[str, Any]], None] | None) -> None:
    run.results[i].history.append(row)
    if on_log is not None:
        on_log(i, row)


def _checkpoint(run: _Run, loop: _Loop, on_checkpoint: Callable[[int, Checkpoint], None]) -> None:
    """Hand every seed's checkpoint to ``on_checkpoint``: state, generators, counters and history so far."""
    snapshot = run.trainer.snapshot(run.state)
    wall = loop.wall_before + time.perf_counter() - loop.wall0
    for i in range(len(run.settings)):
        on_checkpoint(i, Checkpoint(
            step=loop.total, state=one_seed(snapshot, None if run.lanes is None else i),
            batches=run.starts[i].batches.bit_generator.state, done=loop.done[i], diverged_at=loop.diverged_at[i],
            seconds=loop.seconds, executed=loop.executed, chunk_ms=list(loop.chunk_ms), wall=wall,
            compile_seconds=run.compile_seconds, history=[dict(row) for row in run.results[i].history],
            gradients=run.results[i].gradients, resumed_at=list(loop.resumed_at), lanes=run.lanes,
            compile_route=_compilation(run.trainer, run.route).get("route")))
    loop.last_checkpoint = time.perf_counter()


def _finish(run: _Run, loop: _Loop) -> list[TrainResult]:
    """Each seed's parameters, summary and compilation, after the last chunk."""
    exported = run.trainer.export(run.state)
    wall = loop.wall_before + time.perf_counter() - loop.wall0
    for i, result in enumerate(run.results):
        final = result.history[-1]
        mine = exported if run.lanes is None else {k: v[i] for k, v in exported.items()}
        # with the input normalisation, the parameters alone reproduce the network (gradpath.backends.jets)
        result.params = {**mine, "norm_mu": run.starts[i].mu, "norm_sigma": run.starts[i].sigma}
        result.summary = {
            "steps": loop.done[i],
            "error": final[run.problem.primary_metric],
            "metric": run.problem.primary_metric,
            **{k: final[k] for k in run.nan_metrics},
            "train_seconds": loop.seconds,
            "wall_seconds": wall,
            "ms_per_step": float(np.median(loop.chunk_ms)) if loop.chunk_ms else 1e3 * loop.seconds / loop.executed,
            "ms_per_step_mean": 1e3 * loop.seconds / loop.executed,
            "compile_seconds": run.compile_seconds,
            "diverged": loop.diverged_at[i] is not None,
            "diverged_at_step": loop.diverged_at[i],
            "vectorised_seeds": len(run.settings),
            "resumed_at_steps": list(loop.resumed_at),
            "device": run.device,
            "device_name": run.impl.device_name(run.device),
        }
        result.compilation = _compilation(run.trainer, run.route) or None
    return run.results


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
