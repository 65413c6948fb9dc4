"""The results store: one run record (:mod:`gradpath.suite.runs.record`) per run, named by its config hash.

``<store>/<problem>-<method>-<backend>-s<seed>-<hash>/`` is the same directory ``gradpath run
--out <store>`` writes, so both find each other's runs. A run is *done* when its summary says
``complete`` or ``diverged`` and the record around it is sound (:func:`inspect_record`: the
summary's fields of their JSON types, a complete run with a finite positive error, config matching the
key, every history row numeric up to the summary's step, parameters saved, unless the record was
rebuilt by :mod:`gradpath.suite.runs.restore` from a published table, which keeps none); anything else (missing,
``running`` after a kill, ``failed``, ``interrupted``, ``corrupt``) is redone. The summary is the
last file a run writes, and every JSON file is replaced atomically, so a killed run is never
mistaken for a done one. ``<store>/.locks/`` holds one lock file per run (``flock``, released by
the kernel when its process dies), so two processes never train the same run at once.

A ``corrupt`` record (or an unfinished one that holds parameters, which only a finished run saves)
is copied to ``<store>/.damaged/<run>.<UTC time>/`` before it is trained again or restored over
(:meth:`Store.keep_damaged`):
it may hold the only copy of a finished run's parameters and history (one bad field in
summary.json is enough to make it corrupt), and training again reproduces them only up to
floating-point nondeterminism. It is copied, not moved, so that the new training still goes on
from the record's checkpoint where it has one.

:func:`gather` turns records into tidy tables: one row per run, and the long history. Both read
records through :func:`inspect_record`, as the campaign does: a damaged record is a row with
status ``corrupt`` and the damage in ``reason``, and its fields of the wrong type are left out of
the row, so they can never reach a statistic.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import time
import zipfile
import zlib
from datetime import datetime, timezone
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gradpath.backends.settings import TrainSettings
from gradpath.problems.errors import UsageError
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.runs.record import (CONFIG, DONE, HISTORY, MANIFEST, PARAMS, STATUSES, SUMMARY,
                                       finished_summary_problem, ill_typed_fields, json_safe, replace_atomically,
                                       writable_directory)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process locks
    fcntl = None  # type: ignore[assignment]

DEFAULT_STORE = "results/store"
# summary fields renamed in the runs table where they would clash with a setting of the same name
RENAMED = {"steps": "steps_done", "device": "device_used"}
SETTING_ORDER = tuple(f.name for f in dataclasses.fields(TrainSettings))
# first_started: when the first process of a run that went on from a checkpoint started
MANIFEST_FIELDS = ("started", "first_started", "hostname", "git_commit", "git_dirty", "gradpath")
TIMESTAMPS = ("started", "first_started", "finished")  # ISO 8601 text; the report computes spans from them
IDENTITY = ("name", "key", "problem", "backend", "status", "reason")  # runs-table columns no record file sets
DAMAGED = ".damaged"  # <store>/.damaged/<run>.<time>/: corrupt records as they were before training again


@dataclass(frozen=True)
class RunState:
    """What the store holds for one run: ``status`` (a summary status, ``missing`` or ``corrupt``)."""

    status: str
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.status in DONE


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _history_last_step(path: Path) -> int:
    """The ``step`` of the last row of a history file whose every row is sound: as many fields as
    the header, every field a number or empty (not logged), every step an integer.

    Raises:
        OSError: the file cannot be read.
        ValueError: what is wrong with it, and where (``csv.Error`` included).
    """
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or "step" not in header:
                raise ValueError("no step column" if header else "empty")
            column = header.index("step")
            last = None
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise ValueError(f"line {line} has {len(row)} fields, the header {len(header)} "
                                     "(a row has the wrong number of fields)")
                for name, text in zip(header, row):
                    if text and not _is_float(text):
                        raise ValueError(f"line {line}: {name} is {text[:20]!r}, not a number")
                step = float(row[column]) if row[column] else math.nan
                if not step.is_integer():
                    raise ValueError(f"line {line}: step is {row[column][:20]!r}, not an integer")
                last = int(step)
    except csv.Error as exc:
        raise ValueError(str(exc)) from None
    if last is None:
        raise ValueError("no rows")
    return last


def _is_float(text: str) -> bool:
    """Whether pandas will read ``text`` as a number: Python's float() also takes "1_0" and spaces,
    which the history reader would reject, so those count as damage here too."""
    if "_" in text or text != text.strip():
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def inspect_record(path: Path, config: Mapping[str, Any] | None = None) -> RunState:
    """Classify the record in ``path``; ``config`` (if given) must equal its config.json.

    Returns ``missing`` (no directory), ``corrupt`` with the damage in ``reason``, or the summary's
    status: a finished status (complete, diverged) only when the whole record is sound (see the
    module docstring); an unfinished one (running, failed, interrupted) with its failure message.
    """
    if not path.is_dir():
        return RunState("missing")
    try:
        summary = _read_json(path / SUMMARY)
    except FileNotFoundError:
        return RunState("corrupt", "no summary.json")
    except (OSError, ValueError) as exc:
        return RunState("corrupt", f"summary.json unreadable ({type(exc).__name__})")
    if not isinstance(summary, dict):
        return RunState("corrupt", f"summary.json unreadable (a JSON {type(summary).__name__}, not an object)")
    status = summary.get("status")
    if status not in STATUSES:
        return RunState("corrupt", f"summary.json has status {json.dumps(status)[:40]}, not one of "
                                   f"{', '.join(STATUSES)}")
    if status not in DONE:
        failure = summary.get("failure")
        return RunState(status, failure.splitlines()[0] if isinstance(failure, str) and failure else "")
    problem = finished_summary_problem(summary)
    if problem:
        return RunState("corrupt", f"summary.json: {problem}")
    try:
        if config is not None and _read_json(path / CONFIG) != json.loads(json.dumps(json_safe(config))):
            return RunState("corrupt", "config.json does not match the run's configuration")
    except (OSError, ValueError) as exc:
        return RunState("corrupt", f"config.json unreadable ({type(exc).__name__})")
    try:
        last = _history_last_step(path / HISTORY)
    except FileNotFoundError:
        return RunState("corrupt", "no history.csv")
    except (OSError, ValueError) as exc:
        return RunState("corrupt", f"history.csv: {exc}")
    if last != summary["steps"]:
        return RunState("corrupt", f"history.csv ends at step {last}, before the summary's step {summary['steps']}"
                        if last < summary["steps"] else
                        f"history.csv ends at step {last}, after the summary's step {summary['steps']}")
    # a record rebuilt from a published runs table (gradpath.suite.runs.restore) has no parameters to check
    if not summary.get("restored_from") and not _is_sound_zip(path / PARAMS):
        return RunState("corrupt", "params.npz missing or unreadable")
    return RunState(status)


def _is_sound_zip(path: Path) -> bool:
    """``path`` is a zip archive (an .npz) whose every member reads back with its checksum (about
    a millisecond for the largest network): damage inside it would otherwise show only in a figure."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error):
        return False


class Store:
    """A directory of run records. ``Store(root)`` creates it and checks that it is writable.

    ``option`` is the command-line option that named ``root`` (``--store``; ``gradpath run``'s is ``--out``),
    which the error names.

    Raises:
        UsageError: ``root`` cannot be created or written.
    """

    def __init__(self, root: str | os.PathLike, *, create: bool = True, option: str = "--store") -> None:
        self.root = Path(root)
        self.option = option
        if create:
            self._check_writable()

    def _check_writable(self) -> None:
        writable_directory(self.root, self.option, "store")
        (self.root / ".locks").mkdir(exist_ok=True)

    def path(self, spec: RunSpec) -> Path:
        return self.root / spec.name

    def state(self, spec: RunSpec) -> RunState:
        return inspect_record(self.path(spec), spec.config)

    @contextlib.contextmanager
    def lock(self, run: RunSpec | str, timeout: float = 30.0) -> Iterator[bool]:
        """Hold the lock of ``run`` (a spec, or a run directory's name); yields False if another
        process held it for ``timeout`` seconds."""
        if fcntl is None:  # pragma: no cover
            yield True
            return
        name = run if isinstance(run, str) else run.name
        with open(self.root / ".locks" / f"{name}.lock", "a") as f:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        yield False
                        return
                    time.sleep(0.2)
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def clean(self, spec: RunSpec) -> None:
        """Ready the run's directory to be trained again (call under its lock): keep a damaged
        record (:meth:`keep_damaged`), then remove temporary files a killed writer left."""
        self.keep_damaged(spec)
        for tmp in self.path(spec).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def keep_damaged(self, spec: RunSpec) -> Path | None:
        """Copy the run's record, as it is, to ``<store>/.damaged/<run>.<UTC time>/`` if it is corrupt
        or holds parameters without being done (only a finished run saves them: its summary was
        lost or overwritten), before it is trained again or replaced (call under its lock).

        Returns:
            The copy, or None when the record is sound, missing or merely unfinished.
        """
        state = self.state(spec)
        if not (state.status == "corrupt" or (not state.done and (self.path(spec) / PARAMS).exists())):
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.root / DAMAGED / f"{spec.name}.{stamp}"
        shutil.copytree(self.path(spec), target, ignore=shutil.ignore_patterns(".*.tmp"))
        return target

    def records(self) -> list[Path]:
        """Every run directory in the store (those with a config.json), sorted by name."""
        if not self.root.is_dir():
            return []
        return sorted(p.parent for p in self.root.glob(f"*/{CONFIG}"))


def config_row(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run config as runs-table columns: problem, backend, each setting by name (lists and mappings
    as JSON text) and each problem parameter as ``param_<name>``."""
    row: dict[str, Any] = {"problem": config.get("problem"), "backend": config.get("backend")}
    settings, parameters = config.get("settings", {}), config.get("parameters", {})
    for name, value in (settings.items() if isinstance(settings, Mapping) else ()):
        row[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    if isinstance(parameters, Mapping):
        row.update({f"param_{k}": v for k, v in parameters.items()})
    return row


def _flat_row(path: Path, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """One runs-table row: config flattened (settings by name, parameters as ``param_<name>``), status
    and reason (:func:`inspect_record`), then the summary and manifest fields.

    A field of the wrong JSON type (text where gradpath writes a number, a timestamp that is not
    one) is left out, and so is a field that would overwrite the run's identity or configuration:
    the record's status already says it is damaged, and its value must not reach a statistic.
    """
    state = inspect_record(path, config)
    if config is None:
        try:
            config = _read_json(path / CONFIG)
        except (OSError, ValueError):
            config = None
    row: dict[str, Any] = {"name": path.name, "key": path.name.rsplit("-", 1)[-1]}
    if isinstance(config, Mapping):
        row.update(config_row(config))
    row["status"] = state.status
    row["reason"] = state.reason or None
    taken = {*row, *IDENTITY}
    summary = _read_object(path / SUMMARY)
    wrong = ill_typed_fields(summary)
    for k, v in summary.items():
        name = RENAMED.get(k, k)
        if k in ("status", "traceback") or k in wrong or name in taken or not _readable(k, v):
            continue
        if k == "failure" and state.status != "failed":  # a failure message belongs to a failed run only
            continue
        row[name] = json.dumps(v) if isinstance(v, (list, dict)) else v
    manifest = _read_object(path / MANIFEST)
    for k in MANIFEST_FIELDS:
        v = manifest.get(k)
        if k in manifest and _readable(k, v) and (v is None or isinstance(v, bool if k == "git_dirty" else str)):
            row[k] = v
    return row


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; empty if the file is missing, unreadable or holds something else."""
    try:
        data = _read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _readable(name: str, value: Any) -> bool:
    """False for a timestamp field whose value is not ISO 8601 text (null passes)."""
    if name not in TIMESTAMPS or value is None:
        return True
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


def _sanitise(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of mixed Python types (e.g. a parameter int in one problem, text in another) become text."""
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column] if v is not None and not (isinstance(v, float) and v != v)}
            if len(kinds) > 1 and not kinds <= {int, float}:
                frame[column] = frame[column].map(lambda v: None if v is None or v != v else str(v))
    return frame


def runs_table(store: Store, specs: Iterable[RunSpec] | None = None) -> pd.DataFrame:
    """One row per run: every record in the store, or exactly the runs of ``specs`` (missing ones too)."""
    if specs is None:
        rows = [_flat_row(path, None) for path in store.records()]
    else:
        rows = [_flat_row(store.path(spec), spec.config) for spec in specs]
    return _sanitise(_ordered(pd.DataFrame(rows)))


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in reading order: identity, problem and backend, settings, parameters, status, summary, manifest."""
    first = [c for c in ("name", "key", "problem", "backend") if c in frame]
    settings = [c for c in (*SETTING_ORDER, "layers") if c in frame]
    params = sorted(c for c in frame if c.startswith("param_"))
    last = [c for c in MANIFEST_FIELDS if c in frame]
    rest = [c for c in frame if c not in {*first, *settings, *params, *last}]
    return frame[first + settings + params + rest + last]


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    """A run's history.csv as a table of numbers (empty fields: NaN).

    Raises:
        OSError: it cannot be read.  ValueError: it is not a table of numbers (a column holds text).
    """
    frame = pd.read_csv(path)
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise ValueError(f"column {text[0]!r} of {path} holds text")
    return frame


def history_table(store: Store, keys_names: Iterable[str]) -> pd.DataFrame:
    """The long history: ``key`` plus every history row of the named run directories whose history
    is a table of numbers (a damaged one is left out; :func:`inspect_record` names the damage)."""
    frames = []
    for name in keys_names:
        try:
            frame = read_history(store.root / name / HISTORY)
        except (OSError, ValueError):
            continue
        frame.insert(0, "key", name.rsplit("-", 1)[-1])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"key": []})


def write_run_tables(out: str | os.PathLike, runs: pd.DataFrame, history: pd.DataFrame | None = None) -> list[Path]:
    """Write ``runs.parquet``, ``runs.csv`` (and ``history.parquet``) to ``out``, each atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame, write in (("runs.parquet", runs, lambda f, p: f.to_parquet(p, index=False)),
                               ("runs.csv", runs, lambda f, p: f.to_csv(p, index=False)),
                               ("history.parquet", history, lambda f, p: f.to_parquet(p, index=False))):
        if frame is None:
            continue
        replace_atomically(out / name, lambda f, frame=frame, write=write: write(frame, f))
        written.append(out / name)
    return written


def gather(store: Store, specs: Iterable[RunSpec] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs table and the long history table of the store (or of ``specs``)."""
    runs = runs_table(store, specs)
    names = runs.loc[runs["status"] != "missing", "name"] if len(runs) else []
    return runs, history_table(store, names)
