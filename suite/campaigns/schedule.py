"""Running a campaign: its jobs a few at a time on an executor, with a progress bar.

A job is a group of runs that differ only in their seed (:func:`seed_groups`, at most ``lanes``
of them), trained together as one vectorised program by :func:`gradpath.suite.runs.job.run_group`
(in a worker process); :func:`run_campaign` feeds an executor (see
:mod:`gradpath.suite.campaigns.executors`) ``executor.slots`` jobs at a time and shows progress per
run. A run that raises is recorded as ``failed`` with its message and the campaign goes on.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from gradpath.suite.campaigns.executors import Executor
from gradpath.suite.runs.job import outcome
from gradpath.suite.runs.record import DONE, SUMMARY, write_json
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.runs.store import Store

# seeds per vectorised job: the paper's 10 seeds of one configuration train as one program
DEFAULT_LANES = 10


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
            return outcome(spec, state.status, t0, f"finished; then its {message}")
        if locked and store.path(spec).is_dir():
            write_json(store.path(spec) / SUMMARY, {"status": "failed", "failure": message})
    return outcome(spec, "failed", t0, message)


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
