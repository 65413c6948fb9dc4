"""One job: a group of runs that differ only in their seed, trained together into the store.

:func:`run_group` trains a job as one vectorised program (in this process; a campaign's worker
process calls it through :mod:`gradpath.suite.campaigns.executors`) and returns one outcome per run.
A run that raises is recorded as ``failed`` with its message.
Each worker watches its parent: if the campaign process is killed (even with SIGKILL) the worker
exits within a second, leaving its run ``running`` on disk, which the next campaign redoes. Every
``CHECKPOINT_EVERY`` seconds a running job saves a checkpoint per run (``checkpoint.npz``), and the
next campaign goes on from there instead of from step 0 (:mod:`gradpath.backends.checkpoint`): a kill costs
minutes of training, not the job. A worker stops on SIGTERM as on Ctrl-C (its runs record
``interrupted`` and keep their checkpoints), and a job too large for the machine's memory
(:func:`gradpath.suite.runs.resources.check_memory`, with its seeds vectorised) fails before it allocates anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gradpath.backends import get_backend, training
from gradpath.backends.checkpoint import Checkpoint, CheckpointMismatch
from gradpath.problems import get_problem
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.runs.manifest import manifest
from gradpath.suite.runs.record import RunRecord, load_checkpoint
from gradpath.suite.runs.recording import Recording, terminate_as_interrupt
from gradpath.suite.runs.resources import check_memory
from gradpath.suite.runs.store import Store

# steps between gradient records in campaign runs, as `gradpath run`'s default and the authors' code
GRADIENT_EVERY = 10000
# wall-clock seconds between checkpoints of a campaign run: what a kill can cost at most (plus a chunk)
CHECKPOINT_EVERY = 300.0


# -- one run, in a worker process -------------------------------------------------------------

def outcome(spec: RunSpec, status: str, t0: float, message: str = "", summary: dict | None = None) -> dict[str, Any]:
    """One run's outcome as a campaign reports it (key, name, status, message, error, seconds)."""
    summary = summary or {}
    return {"key": spec.key, "name": spec.name, "status": status, "message": message,
            "error": summary.get("error"), "metric": summary.get("metric"), "seconds": time.perf_counter() - t0}


def run_one(spec: RunSpec, store_root: str, argv: Sequence[str]) -> dict[str, Any]:
    """Train ``spec`` into the store unless it is done or another process holds it; never raises for a run error.

    Returns:
        ``{key, name, status, message, error, metric, seconds}``; status is ``complete``,
        ``diverged``, ``failed``, ``interrupted`` or ``skipped``.
    """
    return run_group([spec], store_root, argv)[0]


def run_group(specs: Sequence[RunSpec], store_root: str, argv: Sequence[str]) -> list[dict[str, Any]]:
    """Train runs that differ only in their seed together (:func:`gradpath.backends.training.train_seeds`).

    Each run is locked, skipped if done or held by another process, and gets its own record, as
    in :func:`run_one`; the ones left are trained as one vectorised program where the backend can.
    Returns one outcome per spec, in order.
    """
    with terminate_as_interrupt():  # a worker process's main thread: SIGTERM records the runs interrupted
        return _run_group(specs, store_root, argv)


@dataclass(frozen=True)
class TrainOptions:
    """How runs are trained into their records, beyond their RunSpec (none of it changes a run's key).

    Attributes:
        gradient_every: steps between gradient records (0: none); see
            :func:`gradpath.backends.training.train_seeds`.
        checkpoint_every: wall-clock seconds between checkpoints (0: after every chunk); None: no checkpoints.
        on_row: also called with ``(seed index, history row)`` as each row is logged (a progress bar).
        on_restart: called with the error when a checkpoint does not fit and the runs start afresh.
        reraise: after the records say how training ended (``interrupted``, ``failed``), raise the
            exception on instead of returning it as an outcome (``gradpath run``: exit codes and a
            bug's traceback).
        probes, probe_at_start, full_batch, gradient_parameters: as in
            :func:`gradpath.backends.training.train_seeds` (the diagnostics presets).
    """

    gradient_every: int = GRADIENT_EVERY
    checkpoint_every: float | None = CHECKPOINT_EVERY
    on_row: Callable[[int, dict[str, Any]], None] | None = None
    on_restart: Callable[[CheckpointMismatch], None] | None = None
    reraise: bool = False
    probes: Sequence[training.Probe] = ()
    probe_at_start: bool = False
    full_batch: bool = False
    gradient_parameters: str = "weights"


def _run_group(specs: Sequence[RunSpec], store_root: str, argv: Sequence[str]) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    store = Store(store_root, create=False)
    outcomes: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as locks:
        todo = []
        for spec in specs:
            if not locks.enter_context(store.lock(spec)):
                outcomes[spec.key] = outcome(spec, "skipped", t0, "another process holds its lock")
            elif store.state(spec).done:
                outcomes[spec.key] = outcome(spec, "skipped", t0, "already done")
            else:
                store.clean(spec)
                todo.append(spec)
        # runs that stopped at the same checkpoint step go on together; the others start afresh
        by_step: dict[int | None, list[tuple[RunSpec, Checkpoint | None]]] = {}
        for spec in todo:
            checkpoint = load_checkpoint(store.path(spec))
            by_step.setdefault(None if checkpoint is None else checkpoint.step, []).append((spec, checkpoint))
        interrupted = False
        for pairs in by_step.values():
            some = [spec for spec, _ in pairs]
            if interrupted:  # Ctrl-C stopped an earlier group: the worker stops too, its records untouched
                outcomes.update({s.key: outcome(s, "interrupted", t0, "interrupted before it started") for s in some})
                continue
            resume = None if pairs[0][1] is None else [checkpoint for _, checkpoint in pairs]
            done = _train(some, store, list(argv), t0, resume)
            outcomes.update(zip([s.key for s in some], done))
            interrupted = any(outcome["status"] == "interrupted" for outcome in done)
    return [outcomes[spec.key] for spec in specs]


def _train(specs: list[RunSpec], store: Store, argv: list[str], t0: float,
           resume: list[Checkpoint] | None = None) -> list[dict[str, Any]]:
    """A campaign job's group of runs trained with the campaign's options; their outcomes."""
    # the interval is read now, not at import: a test may shorten it
    return train_runs(specs, store, argv, resume, TrainOptions(checkpoint_every=CHECKPOINT_EVERY), t0=t0)[0]


def train_runs(specs: list[RunSpec], store: Store, argv: list[str], resume: list[Checkpoint] | None = None,
               options: TrainOptions = TrainOptions(), *,
               t0: float | None = None) -> tuple[list[dict[str, Any]], list[training.TrainResult] | None]:
    """Train runs that differ only in their seed into their records in ``store`` (the caller holds their locks).

    Each gets a new record (going on from its checkpoint in ``resume`` if given; one that does not
    fit is dropped and the runs start afresh); a run that fails or is interrupted is recorded so.
    Campaign jobs (:func:`run_group`) and ``gradpath run`` both train through here.

    Returns:
        One outcome per spec (see :func:`outcome`), and the TrainResults (None when training did not end).
    """
    t0 = time.perf_counter() if t0 is None else t0
    recording = Recording([], resume=resume, on_row=options.on_row)
    try:
        spec = specs[0]
        problem = get_problem(spec.problem, **spec.parameters)
        recording.metric = problem.primary_metric
        settings = [s.train_settings() for s in specs]
        backend = get_backend(spec.backend)
        device = backend.resolve_device(settings[0].device)
        lanes = len(specs) if len(specs) > 1 and training.supports_lanes(spec.backend) else 1
        check_memory(problem, settings[0], spec.backend, device, lanes=lanes,
                     other_options=("--lanes",) if lanes > 1 else ())
        for i, (s, one) in enumerate(zip(settings, specs)):
            recording.records.append(RunRecord.create(store.root, one.config, manifest(backend, device, s.seed, argv),
                                                      force=True, resume=None if resume is None else resume[i],
                                                      name=one.name))
        every = options.checkpoint_every
        results = training.train_seeds(problem, settings, spec.backend, recording.on_log,
                                       gradient_every=options.gradient_every, resume=resume,
                                       on_checkpoint=None if every is None else recording.on_checkpoint,
                                       checkpoint_every=every or 0.0, probes=options.probes,
                                       probe_at_start=options.probe_at_start, full_batch=options.full_batch,
                                       gradient_parameters=options.gradient_parameters)
    except CheckpointMismatch as exc:
        if resume is None:  # not a checkpoint's fault: a failure like any other
            return _stopped(specs, store, argv, t0, recording, exc, options)
        recording.abandon()  # this gradpath cannot go on from these checkpoints: train afresh instead
        if options.on_restart is not None:
            options.on_restart(exc)
        return train_runs(specs, store, argv, None, options, t0=t0)
    except (Exception, KeyboardInterrupt) as exc:
        return _stopped(specs, store, argv, t0, recording, exc, options)
    statuses = recording.finish(results)
    return [outcome(one, status, t0, "", result.summary) for one, status, result in zip(specs, statuses, results)], \
        results


def _stopped(specs: list[RunSpec], store: Store, argv: list[str], t0: float, recording: Recording,
             exc: BaseException, options: TrainOptions) -> tuple[list[dict[str, Any]], None]:
    """Finish the records after ``exc`` stopped training (or kept it from starting); raise it on if asked."""
    created = len(recording.records)
    status, message = recording.stop(exc)  # first the records that exist: they may hold training
    for one in specs[created:]:  # failed before training: still leave a record that says why
        recording.records.append(RunRecord.create(store.root, one.config, {"command": ["gradpath", *argv]},
                                                  force=True, keep_checkpoint=True, name=one.name))
    recording.stop(exc, first=created)
    if options.reraise:
        raise exc
    return [outcome(one, status, t0, message, recording.partial(i)) for i, one in enumerate(specs)], None


def watch_parent(parent: int, interval: float = 0.5) -> None:
    """Exit this process as soon as ``parent`` is no longer its parent (the campaign was killed)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(70)

    threading.Thread(target=watch, name="gradpath-parent-watch", daemon=True).start()


def _main() -> int:
    """``python -m gradpath.suite.runs.job``: read ``{specs, store, argv}`` JSON on stdin, run them, print the outcomes' JSON list."""
    watch_parent(os.getppid())
    message = json.loads(sys.stdin.read())
    specs = [RunSpec(**spec) for spec in message["specs"]]
    outcomes = run_group(specs, message["store"], message["argv"])
    sys.stdout.write("\n" + json.dumps(outcomes) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
