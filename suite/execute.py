"""Running a campaign: each job in a fresh process, a few at a time, with a progress bar.

A job is a group of runs that differ only in their seed (:func:`seed_groups`, at most ``lanes``
of them), trained together as one vectorised program by :func:`run_group` (in a worker
process); :func:`run_campaign` feeds an executor (see :mod:`gradpath.suite.executors`)
``executor.slots`` jobs at a time and shows progress per run. A run that raises is recorded as
``failed`` with its message and the campaign goes on.
Each worker watches its parent: if the campaign process is killed (even with SIGKILL) the worker
exits within a second, leaving its run ``running`` on disk, which the next campaign redoes. Every
``CHECKPOINT_EVERY`` seconds a running job saves a checkpoint per run (``checkpoint.npz``), and the
next campaign goes on from there instead of from step 0 (:mod:`gradpath.backends.checkpoint`): a kill costs
minutes of training, not the job. A worker stops on SIGTERM as on Ctrl-C (its runs record
``interrupted`` and keep their checkpoints), and a job too large for the machine's memory
(:func:`gradpath.suite.resources.check_memory`, with its seeds vectorised) fails before it allocates anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from gradpath.backends import get_backend, training
from gradpath.backends.checkpoint import Checkpoint, CheckpointMismatch
from gradpath.problems import get_problem
from gradpath.suite.campaign import RunSpec
from gradpath.suite.manifest import manifest
from gradpath.suite.record import DONE, SUMMARY, RunRecord, load_checkpoint, write_json
from gradpath.suite.recording import Recording, terminate_as_interrupt
from gradpath.suite.resources import check_memory
from gradpath.suite.store import Store

if TYPE_CHECKING:
    from gradpath.suite.executors import Executor


# seeds per vectorised job: the paper's 10 seeds of one configuration train as one program
DEFAULT_LANES = 10
# steps between gradient records in campaign runs, as `gradpath run`'s default and the authors' code
GRADIENT_EVERY = 10000
# wall-clock seconds between checkpoints of a campaign run: what a kill can cost at most (plus a chunk)
CHECKPOINT_EVERY = 300.0


# -- one run, in a worker process -------------------------------------------------------------

def _outcome(spec: RunSpec, status: str, t0: float, message: str = "", summary: dict | None = None) -> dict[str, Any]:
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


def _run_group(specs: Sequence[RunSpec], store_root: str, argv: Sequence[str]) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    store = Store(store_root, create=False)
    outcomes: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as locks:
        todo = []
        for spec in specs:
            if not locks.enter_context(store.lock(spec)):
                outcomes[spec.key] = _outcome(spec, "skipped", t0, "another process holds its lock")
            elif store.state(spec).done:
                outcomes[spec.key] = _outcome(spec, "skipped", t0, "already done")
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
                outcomes.update({s.key: _outcome(s, "interrupted", t0, "interrupted before it started") for s in some})
                continue
            resume = None if pairs[0][1] is None else [checkpoint for _, checkpoint in pairs]
            done = _train(some, store, list(argv), t0, resume)
            outcomes.update(zip([s.key for s in some], done))
            interrupted = any(outcome["status"] == "interrupted" for outcome in done)
    return [outcomes[spec.key] for spec in specs]


def _train(specs: list[RunSpec], store: Store, argv: list[str], t0: float,
           resume: list[Checkpoint] | None = None) -> list[dict[str, Any]]:
    recording = Recording([], resume=resume)
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
                                                      force=True, resume=None if resume is None else resume[i]))
        results = training.train_seeds(problem, settings, spec.backend, recording.on_log, gradient_every=GRADIENT_EVERY,
                                       resume=resume, on_checkpoint=recording.on_checkpoint,
                                       checkpoint_every=CHECKPOINT_EVERY)
    except CheckpointMismatch:
        if resume is None:
            raise
        recording.abandon()  # this gradpath cannot go on from these checkpoints: train afresh instead
        return _train(specs, store, argv, t0)
    except (Exception, KeyboardInterrupt) as exc:
        created = len(recording.records)
        status, message = recording.stop(exc)  # first the records that exist: they may hold training
        for one in specs[created:]:  # failed before training: still leave a record that says why
            recording.records.append(RunRecord.create(store.root, one.config, {"command": ["gradpath", *argv]},
                                                      force=True, keep_checkpoint=True))
        recording.stop(exc, first=created)
        return [_outcome(one, status, t0, message, recording.partial(i)) for i, one in enumerate(specs)]
    statuses = recording.finish(results)
    return [_outcome(one, status, t0, "", result.summary) for one, status, result in zip(specs, statuses, results)]


def seed_groups(specs: Sequence[RunSpec], lanes: int) -> list[list[RunSpec]]:
    """``specs`` in groups of at most ``lanes`` runs that differ only in their seed, in first-seen order."""
    groups: dict[str, list[list[RunSpec]]] = {}
    for spec in specs:
        same = json.dumps([spec.problem, spec.parameters, spec.backend,
                           {k: v for k, v in spec.config["settings"].items() if k != "seed"}], sort_keys=True)
        chunks = groups.setdefault(same, [[]])
        if len(chunks[-1]) == lanes:
            chunks.append([])
        chunks[-1].append(spec)
    return [group for chunks in groups.values() for group in chunks]


def watch_parent(parent: int, interval: float = 0.5) -> None:
    """Exit this process as soon as ``parent`` is no longer its parent (the campaign was killed)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(70)

    threading.Thread(target=watch, name="gradpath-parent-watch", daemon=True).start()


# -- the campaign loop -------------------------------------------------------------------------

@dataclass
class CampaignResult:
    """What one campaign invocation did: ``counts`` of outcome statuses, ``already`` done before, every outcome."""

    planned: int
    already: int
    counts: Counter = field(default_factory=Counter)
    outcomes: list[dict[str, Any]] = field(default_factory=list)


class CampaignProgress:
    """A tqdm bar over runs (done, failed, running, ETA) on a terminal; one line per finished run otherwise."""

    def __init__(self, total: int, *, quiet: bool = False) -> None:
        self.total, self.quiet, self.counts, self.running = total, quiet, Counter(), 0
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr, disable=quiet or not self.tty)

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"failed {self.counts['failed']}, diverged {self.counts['diverged']}, "
                                 f"running {self.running}", refresh=True)

    def started(self, running: int) -> None:
        self.running = running
        self._postfix()

    def finished(self, outcome: dict[str, Any], running: int) -> None:
        self.counts[outcome["status"]] += 1
        self.running = running
        done = sum(self.counts.values())
        error = f", {outcome['metric']} {outcome['error']:.3e}" if isinstance(outcome.get("error"), float) else ""
        text = f"[{done}/{self.total}] {outcome['status']} {outcome['name']}{error} ({outcome['seconds']:.1f} s)"
        if outcome["message"] and outcome["status"] != "complete":
            text += f": {outcome['message']}"
        if self.tty and not self.quiet:
            if outcome["status"] not in DONE:
                self.bar.write(text, file=sys.stderr)
        elif not self.quiet:
            print(text, flush=True)
        self.bar.update(1)
        self._postfix()

    def close(self) -> None:
        self.bar.close()


def _worker_died(store: Store, spec: RunSpec, exc: BaseException, t0: float) -> dict[str, Any]:
    """The outcome of a run whose worker process died; its record (if any) is marked failed, unless
    the run had finished before the worker died: then its record and its status stand."""
    message = f"worker process died: {type(exc).__name__}: {exc}".splitlines()[0]
    with store.lock(spec, timeout=5) as locked:
        state = store.state(spec)
        if state.done:
            return _outcome(spec, state.status, t0, f"finished; then its {message}")
        if locked and store.path(spec).is_dir():
            write_json(store.path(spec) / SUMMARY, {"status": "failed", "failure": message})
    return _outcome(spec, "failed", t0, message)


def run_campaign(specs: Sequence[RunSpec], store: Store, executor: Executor, *, argv: Sequence[str] = (),
                 quiet: bool = False, lanes: int = DEFAULT_LANES) -> CampaignResult:
    """Run every spec that the store does not hold as done, ``executor.slots`` jobs at a time.

    Args:
        lanes: the most runs, differing only in their seed, that one job trains together as one
            vectorised program (:func:`seed_groups`); 1 trains each run in a job of its own.

    Raises:
        KeyboardInterrupt: after cancelling what had not started (running runs record ``interrupted``).
    """
    todo = [spec for spec in specs if not store.state(spec).done]
    result = CampaignResult(planned=len(specs), already=len(specs) - len(todo))
    progress = CampaignProgress(len(todo), quiet=quiet)
    pending, running = deque(seed_groups(todo, lanes)), {}
    started: dict[Any, float] = {}
    n_running = 0
    try:
        while pending or running:
            while pending and len(running) < executor.slots:
                group = pending.popleft()
                future = executor.submit(group, str(store.root), argv)
                running[future], started[future] = group, time.perf_counter()
                n_running += len(group)
            progress.started(n_running)
            for future in executor.wait(list(running)):
                group = running.pop(future)
                n_running -= len(group)
                try:
                    outcomes = future.result()
                except Exception as exc:  # the worker process itself died
                    outcomes = [_worker_died(store, spec, exc, started[future]) for spec in group]
                for outcome in outcomes:
                    result.counts[outcome["status"]] += 1
                    result.outcomes.append(outcome)
                    progress.finished(outcome, n_running)
    except KeyboardInterrupt:
        executor.close(cancel=True)
        raise
    finally:
        progress.close()
    return result


def _main() -> int:
    """``python -m gradpath.suite.execute``: read ``{specs, store, argv}`` JSON on stdin, run them, print the outcomes' JSON list."""
    watch_parent(os.getppid())
    message = json.loads(sys.stdin.read())
    specs = [RunSpec(**spec) for spec in message["specs"]]
    outcomes = run_group(specs, message["store"], message["argv"])
    sys.stdout.write("\n" + json.dumps(outcomes) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
