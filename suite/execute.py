"""Running a campaign: each run in a fresh process, a few at a time, with a progress bar.

:func:`run_one` trains one RunSpec into the store (in a worker process); :func:`run_campaign`
feeds an executor (see :mod:`suite.executors`) ``executor.slots`` runs at a time and shows
progress. A run that raises is recorded as ``failed`` with its message and the campaign goes on.
Each worker watches its parent: if the campaign process is killed (even with SIGKILL) the worker
exits within a second, leaving its run ``running`` on disk, which the next campaign redoes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from backends import get_backend, training
from problems import get_problem
from suite.campaign import RunSpec
from suite.manifest import manifest
from suite.record import HISTORY, SUMMARY, RunRecord, write_json
from suite.store import Store

if TYPE_CHECKING:
    from suite.executors import Executor


# -- one run, in a worker process -------------------------------------------------------------

def _outcome(spec: RunSpec, status: str, t0: float, message: str = "", summary: dict | None = None) -> dict[str, Any]:
    summary = summary or {}
    return {"key": spec.key, "name": spec.name, "status": status, "message": message,
            "error": summary.get("error"), "metric": summary.get("metric"), "seconds": time.perf_counter() - t0}


def _fsync(path: os.PathLike) -> None:
    try:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    except OSError:
        pass


def run_one(spec: RunSpec, store_root: str, argv: Sequence[str]) -> dict[str, Any]:
    """Train ``spec`` into the store unless it is done or another process holds it; never raises for a run error.

    Returns:
        ``{key, name, status, message, error, metric, seconds}``; status is ``complete``,
        ``diverged``, ``failed``, ``interrupted`` or ``skipped``.
    """
    t0 = time.perf_counter()
    store = Store(store_root, create=False)
    with store.lock(spec) as locked:
        if not locked:
            return _outcome(spec, "skipped", t0, "another process holds its lock")
        if store.state(spec).done:
            return _outcome(spec, "skipped", t0, "already done")
        store.clean(spec)
        return _train(spec, store, list(argv), t0)


def _train(spec: RunSpec, store: Store, argv: list[str], t0: float) -> dict[str, Any]:
    last: dict[str, Any] = {}
    record, problem = None, None
    try:
        problem = get_problem(spec.problem, **spec.parameters)
        settings = spec.train_settings()
        backend = get_backend(spec.backend)
        info = manifest(backend, backend.resolve_device(settings.device), settings.seed, argv)
        record = RunRecord.create(store.root, spec.config, info, force=True)

        def on_log(row: dict[str, Any]) -> None:
            record.history.append(row)
            last.update(row)

        result = training.train(problem, settings, spec.backend, on_log)
    except (Exception, KeyboardInterrupt) as exc:
        if record is None:  # failed before training: still leave a record that says why
            record = RunRecord.create(store.root, spec.config, {"command": ["gradpath", *argv]}, force=True)
        metric = getattr(problem, "primary_metric", None)
        partial = {"steps": last.get("step", 0), "error": last.get(metric) if metric else None, "metric": metric}
        if isinstance(exc, KeyboardInterrupt):
            record.finish("interrupted", partial)
            return _outcome(spec, "interrupted", t0, "interrupted", partial)
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        record.finish("failed", {**partial, "failure": message, "traceback": traceback.format_exc()})
        return _outcome(spec, "failed", t0, message, partial)
    record.history.close()
    _fsync(record.path / HISTORY)  # the summary, written last, must never announce rows that are not on disk
    status = "diverged" if result.summary["diverged"] else "complete"
    record.finish(status, result.summary, result.params)
    return _outcome(spec, status, t0, "", result.summary)


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
            if outcome["status"] not in ("complete", "diverged"):
                self.bar.write(text, file=sys.stderr)
        elif not self.quiet:
            print(text, flush=True)
        self.bar.update(1)
        self._postfix()

    def close(self) -> None:
        self.bar.close()


def _worker_died(store: Store, spec: RunSpec, exc: BaseException, t0: float) -> dict[str, Any]:
    """The outcome of a run whose worker process died; its record (if any) is marked failed."""
    message = f"worker process died: {type(exc).__name__}: {exc}".splitlines()[0]
    with store.lock(spec, timeout=5) as locked:
        if locked and store.path(spec).is_dir() and not store.state(spec).done:
            write_json(store.path(spec) / SUMMARY, {"status": "failed", "failure": message})
    return _outcome(spec, "failed", t0, message)


def run_campaign(specs: Sequence[RunSpec], store: Store, executor: Executor, *, argv: Sequence[str] = (),
                 quiet: bool = False) -> CampaignResult:
    """Run every spec that the store does not hold as done, ``executor.slots`` at a time.

    Raises:
        KeyboardInterrupt: after cancelling what had not started (running runs record ``interrupted``).
    """
    todo = [spec for spec in specs if not store.state(spec).done]
    result = CampaignResult(planned=len(specs), already=len(specs) - len(todo))
    progress = CampaignProgress(len(todo), quiet=quiet)
    pending, running = deque(todo), {}
    started: dict[Any, float] = {}
    try:
        while pending or running:
            while pending and len(running) < executor.slots:
                spec = pending.popleft()
                future = executor.submit(spec, str(store.root), argv)
                running[future], started[future] = spec, time.perf_counter()
            progress.started(len(running))
            for future in executor.wait(list(running)):
                spec = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker process itself died
                    outcome = _worker_died(store, spec, exc, started[future])
                result.counts[outcome["status"]] += 1
                result.outcomes.append(outcome)
                progress.finished(outcome, len(running))
    except KeyboardInterrupt:
        executor.close(cancel=True)
        raise
    finally:
        progress.close()
    return result


def _main() -> int:
    """``python -m suite.execute``: read ``{spec, store, argv}`` JSON on stdin, run it, print the outcome JSON."""
    watch_parent(os.getppid())
    message = json.loads(sys.stdin.read())
    spec = RunSpec(**message["spec"])
    outcome = run_one(spec, message["store"], message["argv"])
    sys.stdout.write("\n" + json.dumps(outcome) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
