"""Rebuild a store's run records from the tables a report published, so a lost store costs no finished run.

A store lives on the machine that trains; ``results/<campaign>/`` is what the project commits:
``runs.parquet`` (one row per run: config, summary, manifest fields) and ``history.parquet`` (every
logged row). :func:`restore` turns each finished run of a campaign found there back into a record
of the store: ``config.json`` from the campaign's own spec (so the run key is the campaign's, not a
guess from a flattened row), ``history.csv`` from the long history, ``manifest.json`` from the
manifest fields the table keeps, and ``summary.json`` last, with ``restored_from`` naming the table.

What a published table does not keep cannot come back: ``params.npz`` (results/ holds no
parameter files: they are large and a run's numbers do not need them) and the checkpoint. The store counts a restored record as done without
parameters (:func:`gradpath.suite.runs.store.inspect_record`), so a campaign goes on with only the runs that
are left, and ``gradpath report`` rebuilds every table and curve from it; a figure that needs
a network (the solution fields) keeps the one an earlier build drew of the same runs, or says which
run it lacks.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gradpath.problems.errors import UsageError
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.runs.record import CONFIG, DONE, HISTORY, MANIFEST, SUMMARY, replace_atomically, write_json
from gradpath.suite.runs.store import IDENTITY, MANIFEST_FIELDS, RENAMED, Store

RUNS, HISTORIES = "runs.parquet", "history.parquet"
RESTORED_FROM = "restored_from"  # summary field: the table a record was rebuilt from
# summary fields that are counts: JSON keeps them integers, as the training loop wrote them
INTEGER_FIELDS = ("steps", "diverged_at_step", "vectorised_seeds")
# summary fields the training loop always writes, null where they do not apply (gradpath.backends.training);
# so are the problem's metrics, null after a divergence
NULLABLE_FIELDS = ("diverged_at_step", "error")
NEEDED = {RUNS: ("key", "status"), HISTORIES: ("key", "step")}


@dataclass
class Restored:
    """What :func:`restore` did with each run of the campaign, by run name."""

    restored: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # the store's record was not done: the table's replaced it
    in_store: list[str] = field(default_factory=list)  # the store holds it done: left as it is
    busy: list[str] = field(default_factory=list)  # another process holds its lock (a campaign training it)
    unfinished: list[str] = field(default_factory=list)  # the table has it, but not complete or diverged
    absent: list[str] = field(default_factory=list)  # not in the table
    no_history: list[str] = field(default_factory=list)  # finished, but its history is not in history.parquet

    def extend(self, other: Restored) -> None:
        """Add what a later :func:`restore` call did."""
        for name, names in vars(other).items():
            getattr(self, name).extend(names)

    def line(self) -> str:
        """One line of counts (zero counts left out but the first), e.g.
        ``560 restored, 176 not finished in the table``."""
        parts = [(self.restored, "restored"), (self.replaced, "restored over an unfinished record of the store"),
                 (self.in_store, "already done in the store (kept)"),
                 (self.busy, "being trained by another process (left alone)"),
                 (self.unfinished, "not finished in the table"), (self.absent, "not in the table"),
                 (self.no_history, "finished without a history in the table (not restored)")]
        text = ", ".join(f"{len(names)} {what}" for names, what in parts if names or what == "restored")
        if self.absent and not (self.restored or self.replaced or self.in_store or self.busy
                                or self.unfinished or self.no_history):
            text += " (no run key of this preset is in the table: was it written for another preset?)"
        return text


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A table cell as the JSON value it was written from: numpy scalars as Python ones, and the
    lists and dicts the runs table stores as JSON text (:func:`gradpath.suite.runs.store._flat_row`) parsed back."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _summary(row: Mapping[str, Any], spec: RunSpec, source: str, metrics: Sequence[str]) -> dict[str, Any]:
    """The summary.json fields of a runs-table row: every column that is not config, identity or
    manifest; ``metrics`` (the problem's metric columns) are written even where null, as training does."""
    config_columns = {*spec.config["settings"], *(f"param_{k}" for k in spec.config.get("parameters", {}))}
    back = {renamed: original for original, renamed in RENAMED.items()}
    summary = {}
    for column, value in row.items():
        if column in IDENTITY or column in config_columns or column in MANIFEST_FIELDS or column.startswith("param_"):
            continue
        value, name = _plain(value), back.get(column, column)
        if _missing(value):
            if name in NULLABLE_FIELDS or name in metrics:
                summary[name] = None
            continue
        summary[name] = int(value) if name in INTEGER_FIELDS and isinstance(value, float) else value
    summary[RESTORED_FROM] = source
    return summary


def _read(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs and history tables of a results directory; UsageError if either is missing or foreign."""
    hint = "name a results directory that `gradpath report` wrote, e.g. results/paper"
    if not directory.is_dir():
        raise UsageError(f"{directory} does not exist; {hint}")
    missing = [name for name in NEEDED if not (directory / name).is_file()]
    if missing:
        raise UsageError(f"{directory} has no {' or '.join(missing)}; {hint}")
    tables = []
    for name, columns in NEEDED.items():
        try:
            table = pd.read_parquet(directory / name)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {directory / name}: {exc}") from None
        lacking = [c for c in columns if c not in table]
        if lacking:
            raise UsageError(f"{directory / name} has no column {', '.join(lacking)}; {hint}")
        tables.append(table)
    return tables[0], tables[1]


def _history_columns(runs: pd.DataFrame, history: pd.DataFrame) -> dict[tuple, list[str]]:
    """Per (problem, layers): the history columns its runs logged, in the long table's order. A run
    that diverged before its first log has NaN in its metric columns: they are its columns all the same."""
    configuration = runs.set_index("key")[["problem", "layers"]].astype(str).apply(tuple, axis=1)
    filled = history.drop(columns="key").notna().groupby(history["key"].map(configuration)).any()
    return {group: [c for c in filled.columns if row[c]] for group, row in filled.iterrows()}


def restore(specs: Sequence[RunSpec], source: str | Path, store: Store) -> Restored:
    """Rebuild, in ``store``, the record of each run of ``specs`` that the report in ``source``
    (a results directory holding runs.parquet and history.parquet) lists as complete or diverged.

    A run the store already holds done is left alone: the store is what trained, the table only a
    copy of it. A record that is not done (failed, interrupted, corrupt) is replaced, a corrupt one
    copied aside first (:meth:`gradpath.suite.runs.store.Store.keep_damaged`); one whose lock
    another process holds (a campaign training it) is left alone. ``store`` is created (if it does
    not exist) only once both tables have been read. Each record is written under the run's lock, summary last, so a
    campaign running beside the restore never sees half a record as done.

    Raises:
        UsageError: ``source`` lacks either table or cannot be read.
    """
    source = Path(source)
    runs, history = _read(source)
    store = Store(store.root)  # creates it and checks that it is writable
    by_key = {str(row["key"]): row for row in runs.to_dict("records")}
    histories = dict(tuple(history.groupby("key", sort=False)))
    columns = _history_columns(runs, history) if {"problem", "layers"} <= set(runs) else {}
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
            # timeout 0: a run whose lock is held is in training now; waiting would not change that
            with store.lock(spec, timeout=0) as held:
                if not held:
                    done.busy.append(spec.name)
                    continue
                if store.state(spec).done:
                    done.in_store.append(spec.name)
                    continue
                # a record that is not done (failed, interrupted, corrupt, or a restore cut off
                # before its summary) is worth less than the table's finished run
                replacing = store.path(spec).exists()
                if replacing:
                    store.keep_damaged(spec)  # a corrupt record may hold what the table lacks (parameters)
                    shutil.rmtree(store.path(spec))
                group = (str(row.get("problem")), str(row.get("layers")))
                _write_record(store.path(spec), spec, row, histories[spec.key], columns.get(group), table)
            (done.replaced if replacing else done.restored).append(spec.name)
    return done


def _write_record(path: Path, spec: RunSpec, row: Mapping[str, Any], history: pd.DataFrame,
                  columns: list[str] | None, table: str) -> None:
    """Write one restored record; ``history`` is the run's rows of the long history table, ``columns``
    the history columns of its problem and network (None: those it filled)."""
    path.mkdir(parents=True)
    write_json(path / CONFIG, spec.config)
    # a manifest column of the table is every run's field (null where it was), e.g. git_commit outside git
    manifest = {k: None if _missing(value := _plain(row[k])) else value for k in MANIFEST_FIELDS if k in row}
    write_json(path / MANIFEST, {**manifest, RESTORED_FROM: table})
    own = history.drop(columns="key")
    own = (own[columns] if columns else own.dropna(axis=1, how="all")).sort_values("step")
    own["step"] = own["step"].astype(int)
    # flushed to disk before the summary that announces it, as RunRecord.finish does
    replace_atomically(path / HISTORY, lambda f: f.write(own.to_csv(index=False).encode()))
    metrics = [c for c in own.columns if c in row]  # a history column the runs table has too: a metric
    write_json(path / SUMMARY, {**_summary(row, spec, table, metrics), "status": row["status"]})


def restored_counts(runs: pd.DataFrame) -> Counter:
    """How many rows of a runs table came from each published table (empty if none was restored)."""
    if RESTORED_FROM not in runs:
        return Counter()
    return Counter(v for v in runs[RESTORED_FROM] if isinstance(v, str))
