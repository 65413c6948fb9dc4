"""Random damage to a store's records (truncation, garbage bytes, wrong types, missing keys, deleted
files and runs) never costs a traceback: ``gradpath campaign --dry-run`` and ``gradpath report`` exit 0,
and every run is either counted correctly in the tables or listed with what is wrong with it.

Hypothesis draws the damage from a fixed seed (``derandomize``), so CI sees the same examples every time.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import gradpath.suite.report.build
from gradpath.suite.campaigns.definition import expand, load_campaign
from gradpath.suite.cli.commands import main
from gradpath.suite.runs.record import CONFIG, DONE, HISTORY, MANIFEST, PARAMS, SUMMARY, RunRecord
from gradpath.suite.runs.store import Store, gather, write_run_tables

CAMPAIGN = """
name = "fuzz"
[grid]
problem = ["poisson1d"]
method = ["M1", "M2"]
seed = [0, 1]
[settings]
steps = 30
log_every = 10
width = 4
depth = 1
"""
FILES = (SUMMARY, CONFIG, HISTORY, MANIFEST, PARAMS)
JSON_FILES = (SUMMARY, CONFIG, MANIFEST)
RUNS = 4
# files without which a record cannot be a finished run
ESSENTIAL = (SUMMARY, CONFIG, HISTORY, PARAMS)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A campaign file and a store of its 4 runs, complete (M2's boundary weight annealed), never trained."""
    root = tmp_path_factory.mktemp("fuzz")
    source = root / "fuzz.toml"
    source.write_text(CAMPAIGN)
    specs = expand(load_campaign(str(source)))
    store = Store(root / "store")
    for i, spec in enumerate(specs):
        error = 0.1 * (i + 1)
        record = RunRecord.create(store.root, spec.config, {"started": "2025-01-01T00:00:00+00:00",
                                                            "hostname": "fuzz", "git_dirty": False})
        for step in (10, 20, 30):
            record.history.append({"step": step, "seconds": step / 100, "loss_residual": 1 / step,
                                   "loss_boundary": 2 / step, "weight_residual": 1.0,
                                   "weight_boundary": 1.0 + step * (spec.settings["method"] == "M2"),
                                   "rel_l2": error * 30 / step})
        record.finish("complete", {"steps": 30, "error": error, "metric": "rel_l2", "rel_l2": error,
                                   "diverged": False, "diverged_at_step": None, "ms_per_step": 1.0,
                                   "train_seconds": 0.03, "wall_seconds": 0.05, "device": "cpu"},
                      {"W0": np.ones((1, 4)), "b0": np.zeros(4), "W1": np.ones((4, 1)), "b1": np.zeros(1)})
    return source, specs, store.root


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                        st.text(max_size=6), st.lists(st.integers(0, 9), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2))
DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("garbage"), st.sampled_from(FILES), st.floats(0, 1), st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("delete"), st.sampled_from(FILES)),
    st.tuples(st.just("wrong type"), st.sampled_from(JSON_FILES), st.integers(0, 99), JSON_VALUES),
    st.tuples(st.just("missing key"), st.sampled_from(JSON_FILES), st.integers(0, 99)),
    st.tuples(st.just("history cell"), st.integers(0, 99), st.integers(0, 99),
              st.one_of(st.text(max_size=6), st.floats(allow_nan=True).map(str))),
    st.tuples(st.just("delete run")),
)
DAMAGES = st.lists(st.tuples(st.integers(0, RUNS - 1), DAMAGE), min_size=1, max_size=3)


def _apply(run: Path, damage: tuple) -> None:
    """Damage one run directory as ``damage`` says; damage to a file that is already gone does nothing."""
    kind, *args = damage
    if kind == "delete run":
        shutil.rmtree(run, ignore_errors=True)
        return
    name = HISTORY if kind == "history cell" else args[0]
    path = run / name
    if not path.is_file():
        return
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:int(args[1] * len(data))])
    elif kind == "garbage":
        data = path.read_bytes()
        at = int(args[1] * len(data))
        path.write_bytes(data[:at] + args[2] + data[at + len(args[2]):])
    elif kind == "delete":
        path.unlink()
    elif kind in ("wrong type", "missing key"):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            return
        if not isinstance(data, dict) or not data:
            return
        # the nested settings too: a config's values are mostly there
        targets = [(data, k) for k in sorted(data)] + [(data["settings"], k) for k in sorted(data.get("settings", {}))
                                                       if isinstance(data.get("settings"), dict)]
        where, key = targets[args[1] % len(targets)]
        if kind == "missing key":
            del where[key]
        else:
            where[key] = args[2]
        path.write_text(json.dumps(data))  # NaN as the JSON extension json.loads reads back
    elif kind == "history cell":
        lines = path.read_text(errors="replace").split("\n")
        row = lines[args[0] % len(lines)].split(",")
        row[args[1] % len(row)] = args[2].replace(",", ";").replace("\n", " ")
        lines[args[0] % len(lines)] = ",".join(row)
        path.write_text("\n".join(lines))


def _run(argv: list[str]) -> tuple[int, str, str]:
    """``gradpath ARGV`` in this process: exit code, stdout, stderr (a traceback would raise here)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _check(source: Path, specs, store: Path, out: Path, damages) -> None:
    """Everything the campaign and the report say about the damaged store, against the records themselves."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, dry, err = _run(["campaign", str(source), "--store", str(store), "--dry-run"])
        assert code == 0, (damages, err)
        code, _, err = _run(["report", "--preset", str(source), "--store", str(store), "--out", str(out)])
        assert code == 0, (damages, err)
    failed = [str(w.message) for w in caught if "failed" in str(w.message)]
    assert not failed, (damages, failed)  # no figure fell over either

    runs = pd.read_parquet(out / "runs.parquet").set_index("name")
    lines = {line.split()[-1]: line for line in dry.splitlines()[:-1]}
    report = (out / "REPORT.md").read_text()
    runs_section = report.split("## Runs", 1)[1].split("\n## ", 1)[0]
    for spec in specs:
        row, path, line = runs.loc[spec.name], store / spec.name, lines[spec.name]
        status = row["status"]
        # the campaign and the report read a record the same way
        expected = {"done": "done" if status in DONE else None, "to": "missing", "redo": f"redo ({status}"}
        assert line.startswith("done") == (status in DONE), (damages, line, status)
        assert line.startswith("to run") == (status == "missing"), (damages, line, status)
        if line.startswith("redo"):
            assert line.startswith(expected["redo"]), (damages, line, status)
        if status == "complete":  # a run counted as complete is one, with the error the table uses
            assert all((path / name).is_file() for name in ESSENTIAL), damages
            error = json.loads((path / SUMMARY).read_text())["error"]
            assert isinstance(error, (int, float)) and math.isfinite(error) and error > 0, damages
            assert row["error"] == error, damages
        elif status not in DONE and status != "missing":  # every run left out is named, and why
            assert f"`{spec.name}`: {status}" in runs_section, (damages, status)
            if status == "corrupt":
                assert isinstance(row["reason"], str) and f"({row['reason']})" in runs_section, damages
    for index in sorted({i for i, _ in damages}):  # what the damage came to (--hypothesis-show-statistics)
        event(f"damaged run: {runs.loc[specs[index].name, 'status']}")
    for name, kind in {(specs[i].name, d[0] if d[0] != "delete" else f"delete {d[1]}") for i, d in damages}:
        if kind == "delete run":
            assert runs.loc[name, "status"] == "missing", damages
        elif kind in {f"delete {f}" for f in ESSENTIAL}:
            assert runs.loc[name, "status"] != "complete", damages

    table = out / "poisson1d.csv"
    complete = runs[runs["status"] == "complete"]
    if not table.is_file():
        assert complete.empty, damages
        return
    cells = pd.read_csv(table).set_index("method")
    for method, cell in cells.iterrows():
        mine = complete[complete["method"] == method]
        assert cell["n"] == len(mine), (damages, method)
        assert cell["diverged"] == int((runs.loc[runs["method"] == method, "status"] == "diverged").sum()), damages
        if len(mine):
            assert cell["mean"] == pytest.approx(float(mine["error"].mean()), nan_ok=True), (damages, method)
    history = pd.read_parquet(out / "history.parquet")
    assert history.empty or pd.api.types.is_numeric_dtype(history["step"]), damages
    # what a campaign writes into the store after training: the tables of every record there
    whole = write_run_tables(out / "store-tables", *gather(Store(store, create=False)))
    assert [p.name for p in whole] == ["runs.parquet", "runs.csv", "history.parquet"], damages


def _fuzz(base, damages, figures) -> None:
    source, specs, root = base
    with tempfile.TemporaryDirectory() as scratch, mock.patch.object(gradpath.suite.report.build, "FIGURES", figures):
        store = Path(scratch) / "store"
        shutil.copytree(root, store)
        for index, damage in damages:
            _apply(store / specs[index].name, damage)
        _check(source, specs, store, Path(scratch) / "out", damages)


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(damages=DAMAGES)
def test_random_damage_is_reported_never_a_traceback(base, damages):
    """The report's tables and runs, without figures (the figures have the test below)."""
    _fuzz(base, damages, [])


@settings(max_examples=4, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(damages=DAMAGES)
def test_random_damage_leaves_every_figure_drawable(base, damages):
    """The whole report, every figure included: none falls over on a damaged store."""
    _fuzz(base, damages, list(gradpath.suite.report.build.FIGURES))
