"""Executors: where the runs of a campaign execute.

An executor runs :func:`gradpath.suite.runs.job.run_group` for a group of RunSpecs (runs that differ only in
their seed) somewhere and hands back a future of their outcomes. It needs only ``slots`` (jobs at
once), ``submit(specs, store_root, argv)``, ``wait(futures)``
(the set done so far, blocking until at least one is) and ``close(cancel)``:

- :class:`LocalExecutor`: a ``ProcessPoolExecutor`` with the ``spawn`` context and one task per
  worker process, so no framework state (JAX's x64 flag, torch threads, compile caches) leaks
  from one run into the next.
- :class:`DaskExecutor`: a ``dask.distributed`` scheduler (``--executor dask --scheduler
  tcp://HOST:PORT``) or a local cluster on the loopback interface (``--executor dask-local
  --workers N``). Each task starts ``python -m gradpath.suite.runs.job`` on its worker, so runs are
  isolated there too. The store must be a directory every worker can write.

Another executor (a batch queue, say) is one more small class with these four members.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from gradpath.problems.errors import UsageError, unknown_choice
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.runs.job import run_group, watch_parent

EXECUTORS = ("local", "dask", "dask-local")


class Executor(Protocol):
    """Where runs execute. ``slots``: how many at once."""

    name: str
    slots: int

    def submit(self, specs: Sequence[RunSpec], store_root: str, argv: Sequence[str]) -> Any: ...

    def wait(self, futures: Sequence[Any]) -> set[Any]: ...

    def close(self, cancel: bool = False) -> None: ...


class LocalExecutor:
    """``jobs`` worker processes on this machine, a fresh process per run (spawn, one task per child)."""

    name = "local"

    def __init__(self, jobs: int | None = None) -> None:
        self.slots = jobs or os.cpu_count() or 1
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.Executor:
        if sys.version_info < (3, 11):  # no max_tasks_per_child: a thread per slot, each run a subprocess
            return concurrent.futures.ThreadPoolExecutor(self.slots)
        return concurrent.futures.ProcessPoolExecutor(
            self.slots, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1,
            initializer=watch_parent, initargs=(os.getpid(),))

    def submit(self, specs: Sequence[RunSpec], store_root: str, argv: Sequence[str]) -> concurrent.futures.Future:
        threads = isinstance(self._pool, concurrent.futures.ThreadPoolExecutor)
        fn, first = (run_isolated, _specs_json(specs)) if threads else (run_group, list(specs))
        try:
            return self._pool.submit(fn, first, store_root, list(argv))
        except BrokenProcessPool:  # a worker died hard (killed, out of memory): start a fresh pool
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(fn, first, store_root, list(argv))

    def wait(self, futures: Sequence[Any]) -> set[Any]:
        return concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED).done

    def close(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


class DaskExecutor:
    """Runs on a dask.distributed cluster: an existing scheduler, or a local cluster on 127.0.0.1."""

    def __init__(self, scheduler: str | None = None, *, workers: int | None = None) -> None:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise UsageError("the dask executors need dask.distributed; install it with: "
                             "pip install 'gradpath[dask]'") from None
        self.cluster = None
        if scheduler is None:
            self.name = "dask-local"
            self.cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                        processes=True, host="127.0.0.1", dashboard_address=None)
            scheduler = self.cluster.scheduler_address
        else:
            self.name = "dask"
        try:
            self.client = Client(scheduler, timeout=20)
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"cannot reach the dask scheduler {scheduler!r}: {exc}") from None
        workers_info = self.client.scheduler_info().get("workers", {}).values()
        self.slots = max(1, sum(w.get("nthreads", 1) for w in workers_info))

    def submit(self, specs: Sequence[RunSpec], store_root: str, argv: Sequence[str]) -> Any:
        return self.client.submit(run_isolated, _specs_json(specs), store_root, list(argv), pure=False,
                                  key=f"gradpath-{specs[0].name}-{os.urandom(4).hex()}")

    def wait(self, futures: Sequence[Any]) -> set[Any]:
        from dask.distributed import wait
        return set(wait(list(futures), return_when="FIRST_COMPLETED").done)

    def close(self, cancel: bool = False) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(kind: str, *, jobs: int | None = None, scheduler: str | None = None,
                  workers: int | None = None) -> Executor:
    """The executor ``kind`` (``local``, ``dask`` or ``dask-local``).

    Raises:
        UsageError: an unknown kind, or an option that ``kind`` does not use (it would be ignored).
    """
    # which options each executor uses: --jobs (local processes, or dask-local workers), --scheduler
    # (dask), --workers (dask-local)
    uses = {"local": {"jobs"}, "dask": {"scheduler"}, "dask-local": {"jobs", "workers"}}
    given = {name for name, value in (("jobs", jobs), ("scheduler", scheduler), ("workers", workers))
             if value is not None}
    if kind in uses and given - uses[kind]:
        unused = ", ".join(f"--{name}" for name in sorted(given - uses[kind]))
        users = "; ".join(f"--executor {k}: {', '.join('--' + o for o in sorted(v))}" for k, v in uses.items())
        raise UsageError(f"{unused} does nothing with --executor {kind} (options by executor: {users})")
    if kind == "local":
        return LocalExecutor(jobs)
    if kind == "dask":
        if not scheduler:
            raise UsageError("--executor dask needs --scheduler tcp://HOST:PORT (or use --executor dask-local)")
        return DaskExecutor(scheduler)
    if kind == "dask-local":
        return DaskExecutor(workers=workers or jobs)
    raise unknown_choice("executor", kind, EXECUTORS)


def _specs_json(specs: Sequence[RunSpec]) -> str:
    return json.dumps([json.loads(spec.to_json()) for spec in specs])


def run_isolated(specs_json: str, store_root: str, argv: Sequence[str]) -> list[dict[str, Any]]:
    """:func:`run_group` in a fresh ``python -m gradpath.suite.runs.job`` process (for executors without process pools)."""
    message = json.dumps({"specs": json.loads(specs_json), "store": store_root, "argv": list(argv)})
    done = subprocess.run([sys.executable, "-m", "gradpath.suite.runs.job"], input=message, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"run process exited with code {done.returncode}: {done.stderr.strip()[-500:]}") from None
