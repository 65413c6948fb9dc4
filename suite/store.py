"""The results store: one run record (:mod:`suite.record`) per run, named by its config hash.

``<store>/<problem>-<method>-<backend>-s<seed>-<hash>/`` is the same directory ``gradpath run
--out <store>`` writes, so both find each other's runs. A run is *done* when its summary says
``complete`` or ``diverged`` and the record around it is sound (config matches the key, history
readable up to the summary's step, parameters saved, unless the record was rebuilt by
:mod:`suite.restore` from a published table, which keeps none); anything else (missing, ``running`` after a
kill, ``failed``, ``interrupted``, unreadable) is redone. The summary is the last file a run
writes, and every JSON file is replaced atomically, so a killed run is never mistaken for a done
one. ``<store>/.locks/`` holds one lock file per run (``flock``, released by the kernel when its
process dies), so two processes never train the same run at once.

:func:`gather` turns records into tidy tables: one row per run, and the long history.
"""

from __future__ import annotations

import contextlib
import dataclasses
import csv
import json
import os
import secrets
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from backends.settings import TrainSettings
from problems.errors import UsageError
from suite.campaign import RunSpec
from suite.record import CONFIG, DONE, HISTORY, MANIFEST, PARAMS, SUMMARY, _finite

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
    """The ``step`` of the last row of a history file; ValueError if it is unreadable or empty."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "step" not in rows[0]:
        raise ValueError("no rows")
    if any(None in row or None in row.values() for row in rows):
        raise ValueError("a row has the wrong number of fields")
    return int(float(rows[-1]["step"]))


def inspect_record(path: Path, config: Mapping[str, Any] | None = None) -> RunState:
    """Classify the record in ``path``; ``config`` (if given) must equal its config.json."""
    if not path.is_dir():
        return RunState("missing")
    try:
        summary = _read_json(path / SUMMARY)
        status = summary["status"]
    except FileNotFoundError:
        return RunState("corrupt", "no summary.json")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return RunState("corrupt", f"summary.json unreadable ({type(exc).__name__})")
    if status not in DONE:
        return RunState(str(status), summary.get("failure", "") if isinstance(summary, dict) else "")
    try:
        if config is not None and _read_json(path / CONFIG) != json.loads(json.dumps(_finite(config))):
            return RunState("corrupt", "config.json does not match the run's configuration")
        if _history_last_step(path / HISTORY) != summary["steps"]:
            return RunState("corrupt", "history.csv ends before the summary's step")
    except (OSError, ValueError, KeyError) as exc:
        return RunState("corrupt", f"unreadable record ({type(exc).__name__}: {exc})")
    # a record rebuilt from a published runs table (suite.restore) has no parameters to check
    if not zipfile.is_zipfile(path / PARAMS) and not summary.get("restored_from"):
        return RunState("corrupt", "params.npz missing or unreadable")
    return RunState(status)


class Store:
    """A directory of run records. ``Store(root)`` creates it and checks that it is writable.

    Raises:
        UsageError: ``root`` cannot be created or written.
    """

    def __init__(self, root: str | os.PathLike, *, create: bool = True) -> None:
        self.root = Path(root)
        if create:
            self._check_writable()

    def _check_writable(self) -> None:
        probe = self.root / f".probe.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            (self.root / ".locks").mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"store {str(self.root)!r} is not writable: {exc.strerror or exc}; "
                             "choose another with --store DIR") from None

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
        """Remove temporary files a killed writer left in the run's directory (call under its lock)."""
        for tmp in self.path(spec).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def records(self) -> list[Path]:
        """Every run directory in the store (those with a config.json), sorted by name."""
        if not self.root.is_dir():
            return []
        return sorted(p.parent for p in self.root.glob(f"*/{CONFIG}"))


def _flat_row(path: Path, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """One runs-table row: config flattened (settings by name, parameters as ``param_<name>``), summary."""
    state = inspect_record(path, config)
    if config is None:
        try:
            config = _read_json(path / CONFIG)
        except (OSError, ValueError):
            config = None
    row: dict[str, Any] = {"name": path.name, "key": path.name.rsplit("-", 1)[-1]}
    if isinstance(config, Mapping):
        row.update(problem=config.get("problem"), backend=config.get("backend"))
        for name, value in config.get("settings", {}).items():
            row[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
        row.update({f"param_{k}": v for k, v in config.get("parameters", {}).items()})
    row["status"] = state.status
    row["reason"] = state.reason or None
    for source, fields in ((SUMMARY, None), (MANIFEST, MANIFEST_FIELDS)):
        try:
            data = _read_json(path / source)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        for k, v in data.items():
            if k not in ("status", "traceback") and (fields is None or k in fields):
                row[RENAMED.get(k, k) if fields is None else k] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return row


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


def history_table(store: Store, keys_names: Iterable[str]) -> pd.DataFrame:
    """The long history: ``key`` plus every history row of the named run directories that have one."""
    frames = []
    for name in keys_names:
        try:
            frame = pd.read_csv(store.root / name / HISTORY)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        frame.insert(0, "key", name.rsplit("-", 1)[-1])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"key": []})


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_tables(out: str | os.PathLike, runs: pd.DataFrame, history: pd.DataFrame | None = None) -> list[Path]:
    """Write ``runs.parquet``, ``runs.csv`` (and ``history.parquet``) to ``out``, each atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame, write in (("runs.parquet", runs, lambda f, p: f.to_parquet(p, index=False)),
                               ("runs.csv", runs, lambda f, p: f.to_csv(p, index=False)),
                               ("history.parquet", history, lambda f, p: f.to_parquet(p, index=False))):
        if frame is None:
            continue
        with _atomic(out / name) as tmp:
            write(frame, tmp)
        written.append(out / name)
    return written


def gather(store: Store, specs: Iterable[RunSpec] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs table and the long history table of the store (or of ``specs``)."""
    runs = runs_table(store, specs)
    names = runs.loc[runs["status"] != "missing", "name"] if len(runs) else []
    return runs, history_table(store, names)
