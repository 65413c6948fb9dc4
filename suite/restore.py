"""Rebuild a store's run records from the tables a report published, so a lost store costs no finished run.

A store lives on the machine that trains; ``results/<campaign>/`` is what the project commits:
``runs.parquet`` (one row per run: config, summary, manifest fields) and ``history.parquet`` (every
logged row). :func:`restore` turns each finished run of a campaign found there back into a record
of the store: ``config.json`` from the campaign's own spec (so the run key is the campaign's, not a
guess from a flattened row), ``history.csv`` from the long history, ``manifest.json`` from the
manifest fields the table keeps, and ``summary.json`` last, with ``restored_from`` naming the table.

What a published table does not keep cannot come back: ``params.npz`` (the issue forbids
committing parameter files) and the checkpoint. The store counts a restored record as done without
parameters (:func:`suite.store.inspect_record`), so a campaign goes on with only the runs that
are left, and ``gradpath report`` rebuilds every table and curve from it; a figure that needs
a network (the solution fields) says which run it lacks instead of drawing it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from problems.errors import UsageError
from suite.campaign import RunSpec
from suite.record import CONFIG, DONE, HISTORY, MANIFEST, SUMMARY, write_json
from suite.store import MANIFEST_FIELDS, RENAMED, Store

RUNS, HISTORIES = "runs.parquet", "history.parquet"
RESTORED_FROM = "restored_from"  # summary field: the table a record was rebuilt from
IDENTITY = ("name", "key", "problem", "backend", "status", "reason")
# summary fields that are counts: JSON keeps them integers, as the training loop wrote them
INTEGER_FIELDS = ("steps", "diverged_at_step", "vectorised_seeds")
# summary fields the training loop always writes, null where they do not apply (backends.training)
NULLABLE_FIELDS = ("diverged_at_step",)


@dataclass
class Restored:
    """What :func:`restore` did with each run of the campaign, by run name."""

    restored: list[str] = field(default_factory=list)
    in_store: list[str] = field(default_factory=list)  # the store already has a record: left as it is
    unfinished: list[str] = field(default_factory=list)  # the table has it, but not complete or diverged
    absent: list[str] = field(default_factory=list)  # not in the table
    no_history: list[str] = field(default_factory=list)  # finished, but its history is not in history.parquet

    def line(self) -> str:
        """One line of counts, e.g. ``560 restored, 0 already in the store, 176 not finished in the table``."""
        parts = [(self.restored, "restored"), (self.in_store, "already in the store (kept)"),
                 (self.unfinished, "not finished in the table"), (self.absent, "not in the table"),
                 (self.no_history, "finished without a history in the table (not restored)")]
        return ", ".join(f"{len(names)} {what}" for names, what in parts if names or what == "restored")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A table cell as the JSON value it was written from: numpy scalars as Python ones, and the
    lists and dicts the runs table stores as JSON text (:func:`suite.store._flat_row`) parsed back."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _summary(row: Mapping[str, Any], spec: RunSpec, source: str) -> dict[str, Any]:
    """The summary.json fields of a runs-table row: every column that is not config, identity or manifest."""
    config_columns = {*spec.config["settings"], *(f"param_{k}" for k in spec.config.get("parameters", {}))}
    back = {renamed: original for original, renamed in RENAMED.items()}
    summary = {}
    for column, value in row.items():
        if column in IDENTITY or column in config_columns or column in MANIFEST_FIELDS or column.startswith("param_"):
            continue
        value, name = _plain(value), back.get(column, column)
        if _missing(value):
            if name in NULLABLE_FIELDS:
                summary[name] = None
            continue
        summary[name] = int(value) if name in INTEGER_FIELDS and isinstance(value, float) else value
    summary[RESTORED_FROM] = source
    return summary


def _read(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs_path, history_path = directory / RUNS, directory / HISTORIES
    missing = [p.name for p in (runs_path, history_path) if not p.is_file()]
    if missing:
        raise UsageError(f"{directory} has no {' or '.join(missing)}; name a results directory that "
                         "`gradpath report` wrote, e.g. results/paper")
    try:
        return pd.read_parquet(runs_path), pd.read_parquet(history_path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the tables in {directory}: {exc}") from None


def restore(specs: Sequence[RunSpec], source: str | Path, store: Store) -> Restored:
    """Rebuild, in ``store``, the record of each run of ``specs`` that the report in ``source``
    (a results directory holding runs.parquet and history.parquet) lists as complete or diverged.

    A run the store already holds in any state is left alone: the store is what trained, the
    table only a copy of it. Each record is written under the run's lock, summary last, so a
    campaign running beside the restore never sees half a record as done.

    Raises:
        UsageError: ``source`` lacks either table or cannot be read.
    """
    source = Path(source)
    runs, history = _read(source)
    by_key = {str(row["key"]): row for row in runs.to_dict("records")}
    histories = dict(tuple(history.groupby("key", sort=False))) if "key" in history else {}
    table = str(source / RUNS)
    done = Restored()
    for spec in specs:
        row = by_key.get(spec.key)
        if row is None:
            done.absent.append(spec.name)
        elif row.get("status") not in DONE:
            done.unfinished.append(spec.name)
        elif spec.key not in histories:
            done.no_history.append(spec.name)
        else:
            with store.lock(spec) as held:
                if not held or store.path(spec).exists():
                    done.in_store.append(spec.name)
                    continue
                _write_record(store.path(spec), spec, row, histories[spec.key], table)
            done.restored.append(spec.name)
    return done


def _write_record(path: Path, spec: RunSpec, row: Mapping[str, Any], history: pd.DataFrame, table: str) -> None:
    """Write one restored record; ``history`` is the run's rows of the long history table."""
    path.mkdir(parents=True)
    write_json(path / CONFIG, spec.config)
    manifest = {k: _plain(row[k]) for k in MANIFEST_FIELDS if k in row and not _missing(_plain(row[k]))}
    write_json(path / MANIFEST, {**manifest, RESTORED_FROM: table})
    # the long table holds every run's columns: this run's are those it filled
    own = history.drop(columns="key").dropna(axis=1, how="all").sort_values("step")
    own["step"] = own["step"].astype(int)
    own.to_csv(path / HISTORY, index=False)
    write_json(path / SUMMARY, {**_summary(row, spec, table), "status": row["status"]})


def restored_counts(runs: pd.DataFrame) -> Counter:
    """How many rows of a runs table came from each published table (empty if none was restored)."""
    if RESTORED_FROM not in runs:
        return Counter()
    return Counter(v for v in runs[RESTORED_FROM] if isinstance(v, str))
