"""Training written into run records as it goes: each history row, each checkpoint, and how it ended.

`gradpath run` (one seed, with a progress bar) and campaign workers (seeds vectorised) both keep
their records through a :class:`Recording`, so a run that completes, diverges, fails or is
interrupted ends with the same status and summary fields whichever command trained it. Both stop
on SIGTERM as on Ctrl-C (:func:`terminate_as_interrupt`): a run stopped by ``kill``, a batch
system or a container's shutdown is ``interrupted`` and keeps its checkpoint, not left ``running``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gradpath.backends.checkpoint import Checkpoint
from gradpath.backends.training import TrainResult
from gradpath.suite.runs.record import RunRecord, save_checkpoint, save_gradients


class Recording:
    """The records of seeds trained together (one record per seed, in the trainer's order).

    Args:
        records: one RunRecord per seed; a caller may append the records it creates later (a
            run that fails before training still gets a record that says why).
        metric: the problem's primary metric (None if the problem could not be built).
        resume: the checkpoints training goes on from, one per seed, or None.
        on_row: also called with ``(seed index, row)`` for each history row (a progress bar).
    """

    def __init__(self, records: list[RunRecord], metric: str | None = None,
                 resume: Sequence[Checkpoint] | None = None,
                 on_row: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.records = records
        self.metric = metric
        self._on_row = on_row
        # the newest row of each seed, for the partial summary of a run that stops
        self._last: dict[int, dict[str, Any]] = {
            i: dict(c.history[-1]) for i, c in enumerate(resume or ()) if c.history}

    def on_log(self, i: int, row: dict[str, Any]) -> None:
        """Write seed ``i``'s new history row (``train_seeds``'s ``on_log``)."""
        self.records[i].history.append(row)
        self._last.setdefault(i, {}).update(row)
        if self._on_row is not None:
            self._on_row(i, row)

    def on_checkpoint(self, i: int, checkpoint: Checkpoint) -> None:
        """Save seed ``i``'s checkpoint beside its record (``train_seeds``'s ``on_checkpoint``).

        The checkpoint holds the history so far: a run that goes on from it rewrites history.csv.
        """
        save_checkpoint(self.records[i].path, checkpoint)

    def partial(self, i: int) -> dict[str, Any]:
        """What seed ``i`` had reached: steps done and its last logged error."""
        last = self._last.get(i, {})
        return {"steps": last.get("step", 0), "error": last.get(self.metric) if self.metric else None,
                "metric": self.metric}

    def abandon(self) -> None:
        """Close the histories and leave the records as they are: the caller starts the runs afresh
        (a checkpoint that does not fit these settings)."""
        for record in self.records:
            record.history.close()

    def stop(self, exc: BaseException, first: int = 0) -> tuple[str, str]:
        """Finish the records from index ``first`` on after ``exc`` ended training: ``interrupted``
        (Ctrl-C) or ``failed`` (anything else, with the exception's first line and its traceback).
        The history written so far, and the last checkpoint, stay.

        Returns:
            ``(status, one-line message)``.
        """
        if isinstance(exc, KeyboardInterrupt):
            for i in range(first, len(self.records)):
                self.records[i].finish("interrupted", self.partial(i))
            return "interrupted", "interrupted"
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        where = "".join(traceback.format_exception(exc))
        for i in range(first, len(self.records)):
            self.records[i].finish("failed", {**self.partial(i), "failure": message, "traceback": where})
        return "failed", message

    def finish(self, results: Sequence[TrainResult]) -> list[str]:
        """Finish every record with its seed's result: gradients, parameters, and the summary as
        ``complete``, or ``diverged`` if a loss became non-finite. Returns the statuses."""
        statuses = []
        for record, result in zip(self.records, results, strict=True):
            if result.gradients is not None and result.gradients.steps:
                save_gradients(record.path, result.gradients)
            status = "diverged" if result.summary["diverged"] else "complete"
            record.finish(status, result.summary, result.params, result.compilation)
            statuses.append(status)
        return statuses


@contextlib.contextmanager
def terminate_as_interrupt(*, forward_to_children: bool = False) -> Iterator[None]:
    """Within this block, SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so that training stops
    the same way (records ``interrupted``, checkpoints kept, exit code 130).

    Only the main thread can take signals; elsewhere (a thread of a test, say) this does nothing.
    A second SIGTERM while the first is being handled is ignored, so that the records are finished.

    Args:
        forward_to_children: first send SIGTERM on to this process's multiprocessing children
            (a campaign's worker processes), which stop their runs the same way. Ctrl-C reaches
            them without this: the terminal signals the whole process group.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def handler(signum: int, frame: Any) -> None:
        if received:
            return
        received.append(signum)
        if forward_to_children:
            for child in multiprocessing.active_children():
                with contextlib.suppress(OSError):
                    os.kill(child.pid, signal.SIGTERM)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
