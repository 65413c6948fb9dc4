"""A damaged store never costs a report or a finished run (issue 23, D1-D3), campaign names stay names
(D7), and the same runs draw byte-identical figures.

The store here holds fake records, written as a run writes them but without training: the report reads
records, so what it does with a damaged one does not depend on how the numbers were made.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradpath.problems.errors import UsageError
from record_edits import edit_summary
from gradpath.suite.campaigns.definition import NAME_RULE, expand, load_campaign, parse_campaign
from gradpath.suite.cli.commands import main
from gradpath.suite.report.plots import build_figures
from gradpath.suite.campaigns.presets import PRESETS, preset_data
from gradpath.suite.runs.record import HISTORY, PARAMS, SUMMARY, RunRecord
from gradpath.suite.runs.store import DAMAGED, Store, gather

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")

CAMPAIGN = """
name = "integrity"
[grid]
problem = ["poisson1d"]
method = ["M1"]
seed = [0, 1, 2]
[settings]
steps = 30
log_every = 10
width = 4
depth = 1
"""
ERRORS = (0.25, 0.5, 0.75)  # the final error of seeds 0, 1, 2


def _record(store: Store, spec, error: float) -> Path:
    """A complete record as a 30-step run writes it: config, manifest, 3 history rows, parameters, summary."""
    record = RunRecord.create(store.root, spec.config, {"started": "2025-01-01T00:00:00+00:00"})
    for step in (10, 20, 30):
        record.history.append({"step": step, "seconds": step / 100, "loss_residual": 1 / step,
                               "loss_boundary": 1 / step, "weight_residual": 1.0, "weight_boundary": 1.0,
                               "rel_l2": error * 30 / step})
    record.finish("complete", {"steps": 30, "error": error, "metric": "rel_l2", "rel_l2": error, "diverged": False,
                               "diverged_at_step": None, "ms_per_step": 1.0, "train_seconds": 0.03,
                               "wall_seconds": 0.05, "device": "cpu"},
                  {"W0": np.ones((1, 4)), "b0": np.zeros(4), "W1": np.ones((4, 1)), "b1": np.zeros(1)})
    return record.path


@pytest.fixture
def store(tmp_path):
    """``(campaign file, its 3 specs, the store holding their complete records)``."""
    source = tmp_path / "integrity.toml"
    source.write_text(CAMPAIGN)
    specs = expand(load_campaign(str(source)))
    store = Store(tmp_path / "store")
    for spec, error in zip(specs, ERRORS):
        _record(store, spec, error)
    return source, specs, store


def _non_numeric_history_row(path: Path) -> None:
    lines = (path / HISTORY).read_text().splitlines()
    lines[2] = "abc" + lines[2][lines[2].index(","):]  # the step of the middle row, as in the issue
    (path / HISTORY).write_text("\n".join(lines) + "\n")


# the three damages, and the reason the record must carry
DAMAGES = {
    "D1 non-numeric history row": (_non_numeric_history_row, "history.csv: line 3: step is 'abc', not a number"),
    "D2 error is text": (lambda p: edit_summary(p, error="abc"), 'summary.json: error is "abc", not a number'),
    "D3 no error field": (lambda p: edit_summary(p, error=...),
                          "summary.json: a complete run without a finite error (no error field)"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_record_is_listed_as_corrupt_and_left_out_of_the_statistics(store, tmp_path, capsys, damage):
    source, specs, store = store
    damage_record, reason = DAMAGES[damage]
    damage_record(store.path(specs[0]))

    runs, history = gather(store, specs)
    assert list(runs["status"]) == ["corrupt", "complete", "complete"]
    assert runs.loc[0, "reason"] == reason
    assert pd.api.types.is_float_dtype(runs["error"])  # the damaged value never reaches the column as text
    assert list(runs["error"][1:]) == list(ERRORS[1:])
    assert pd.api.types.is_numeric_dtype(history["step"])

    assert main(["campaign", str(source), "--store", str(store.root), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"redo (corrupt: {reason}) {specs[0].name}"  # the campaign plans it again
    assert lines[1].startswith("done") and lines[2].startswith("done") and "3 runs, 2 done, 1 to run" in lines[-1]

    out = tmp_path / "report"
    assert main(["report", "--preset", str(source), "--store", str(store.root), "--out", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    assert "3 runs planned: 2 complete, 1 corrupt" in report or "3 runs planned: 1 corrupt, 2 complete" in report
    assert f"`{specs[0].name}`: corrupt ({reason})" in report
    cells = pd.read_csv(out / "poisson1d.csv")
    assert len(cells) == 1
    cell = cells.iloc[0]
    assert (cell["n"], cell["runs"], cell["diverged"]) == (2, 3, 0)  # left out, never counted as diverged
    assert cell["mean"] == pytest.approx(np.mean(ERRORS[1:]))
    row = next(line for line in (out / "poisson1d.md").read_text().splitlines() if "n=2/3" in line)
    assert "diverged" not in row  # the D3: "[n=1/2, 1 diverged]" for a run that did not diverge
    published = pd.read_parquet(out / "runs.parquet")
    assert list(published["status"]) == ["corrupt", "complete", "complete"]
    assert published.loc[0, "reason"] == reason


def test_a_sound_store_reports_every_run(store, tmp_path):
    source, specs, store = store
    runs, _ = gather(store, specs)
    assert list(runs["status"]) == ["complete"] * 3 and runs["reason"].isna().all()
    out = tmp_path / "report"
    assert main(["report", "--preset", str(source), "--store", str(store.root), "--out", str(out)]) == 0
    cell = pd.read_csv(out / "poisson1d.csv").iloc[0]
    assert (cell["n"], cell["diverged"]) == (3, 0) and cell["mean"] == pytest.approx(np.mean(ERRORS))


def test_cleaning_a_corrupt_record_copies_it_aside_first(store):
    """What a campaign does before it trains a run again: a corrupt record is copied, whole and
    byte for byte, to .damaged/, and so is one that holds a finished run's parameters; a run that
    is merely unfinished, or sound, is not."""
    _, specs, store = store
    damaged = store.path(specs[0])
    edit_summary(damaged, error="abc")
    before = {p.name: p.read_bytes() for p in damaged.iterdir()}
    (damaged / ".summary.json.123.tmp").write_bytes(b"half")  # what a killed writer leaves
    store.clean(specs[0])
    copies = list((store.root / DAMAGED).iterdir())
    assert len(copies) == 1 and copies[0].name.startswith(f"{specs[0].name}.")
    assert {p.name: p.read_bytes() for p in copies[0].iterdir()} == before
    assert {p.name: p.read_bytes() for p in damaged.iterdir()} == before  # copied, not moved: it may resume
    store.clean(specs[1])  # sound: nothing to keep aside
    failed = store.path(specs[2])
    (failed / PARAMS).unlink()  # a failed run saves no parameters
    edit_summary(failed, status="failed", failure="RuntimeError: boom")
    store.clean(specs[2])  # unfinished: trained again from its checkpoint as before, not copied
    assert len(list((store.root / DAMAGED).iterdir())) == 1
    # a finished run's parameters under a summary that says otherwise (a worker's death recorded
    # over it): kept too
    edit_summary(store.path(specs[1]), status="failed", failure="worker process died")
    store.clean(specs[1])
    assert len(list((store.root / DAMAGED).glob(f"{specs[1].name}.*/{PARAMS}"))) == 1
    assert [p.name for p in store.records()] == [s.name for s in specs]  # the copy is no record of the store


def test_restoring_over_a_corrupt_record_keeps_a_copy_of_it(store, tmp_path):
    """`gradpath restore` replaces a record that is not done with the published one, which has no
    parameters: a corrupt record's own (and the rest of it) are copied aside first."""
    from gradpath.suite.runs.restore import restore
    from gradpath.suite.runs.store import write_run_tables

    _, specs, store = store
    published = tmp_path / "published"
    write_run_tables(published, *gather(store, specs))
    edit_summary(store.path(specs[0]), error="abc")
    params = (store.path(specs[0]) / PARAMS).read_bytes()
    done = restore(specs, published, store)
    assert done.replaced == [specs[0].name] and store.state(specs[0]).done
    assert not (store.path(specs[0]) / PARAMS).exists()  # a restored record keeps no parameters...
    kept = list((store.root / DAMAGED).glob(f"{specs[0].name}.*/{PARAMS}"))
    assert len(kept) == 1 and kept[0].read_bytes() == params  # ...but the copy does


@needs_jax
def test_the_campaign_trains_a_corrupt_run_again_and_keeps_the_damaged_record(store, tmp_path, capsys):
    source, specs, store = store
    edit_summary(store.path(specs[0]), error=...)
    others = {s.name: {p.name: p.read_bytes() for p in store.path(s).iterdir()} for s in specs[1:]}
    assert main(["campaign", str(source), "--store", str(store.root), "--jobs", "1", "--quiet"]) == 0
    assert "3 runs, 2 already done; this time: 1 complete" in capsys.readouterr().out
    assert store.state(specs[0]).status == "complete"
    summary = json.loads((store.path(specs[0]) / SUMMARY).read_text())
    assert np.isfinite(summary["error"]) and summary["error"] not in ERRORS  # trained, not the fake value
    kept = json.loads(next((store.root / DAMAGED).glob(f"{specs[0].name}.*/{SUMMARY}")).read_text())
    assert "error" not in kept and kept["ms_per_step"] == 1.0  # the damaged record as it was
    for spec in specs[1:]:  # nothing else was touched
        assert {p.name: p.read_bytes() for p in store.path(spec).iterdir()} == others[spec.name]


def test_a_complete_record_must_have_parameters_and_history(store):
    _, specs, store = store
    (store.path(specs[0]) / PARAMS).unlink()
    (store.path(specs[1]) / HISTORY).unlink()
    runs, history = gather(store, specs)
    assert list(runs["status"]) == ["corrupt", "corrupt", "complete"]
    assert list(runs["reason"][:2]) == ["params.npz missing or unreadable", "no history.csv"]
    assert set(history["key"]) == {specs[0].key, specs[2].key}  # every readable history is kept


# -- D7: names -----------------------------------------------------------------------------------

BAD_NAMES = ["../../../tmp/bad/escaped", "a/b", "/abs", ".hidden", "..", "a b", "tab\tname", "naïve", "x" * 101,
             "back\\slash", "semi;colon"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_unsafe_campaign_name_is_a_usage_error_naming_the_rule(tmp_path, capsys, name):
    source = tmp_path / "bad.toml"
    source.write_text(CAMPAIGN.replace('name = "integrity"', f"name = {json.dumps(name)}"))
    with pytest.raises(UsageError) as caught:
        load_campaign(str(source))
    message = str(caught.value)
    assert repr(name) in message and NAME_RULE in message and "\n" not in message
    for command in (["reproduce", "--preset", str(source)], ["report", "--preset", str(source)],
                    ["campaign", str(source), "--dry-run"]):
        assert main([*command, "--store", str(tmp_path / "store")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and NAME_RULE in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # nothing written anywhere


def test_safe_names_pass_and_a_file_name_is_checked_as_the_default(tmp_path):
    for name in ("table2", "paper-on-h200-2", "v1.2_run", "x" * 100, "9lives"):
        grid = {"grid": {"problem": ["poisson1d"]}, "name": name}
        assert parse_campaign(grid, "test").name == name
    for preset in PRESETS:  # every preset name is a safe results directory
        assert parse_campaign(preset_data(preset), f"preset {preset}", default_name=preset).name == preset
    unnamed = tmp_path / "my campaign.toml"
    unnamed.write_text(CAMPAIGN.replace('name = "integrity"', ""))
    with pytest.raises(UsageError, match=r"'my campaign' .*set name = \"...\" in it|set name.*'my campaign'"):
        load_campaign(str(unnamed))
    shutil.copy(unnamed, tmp_path / "my-campaign.toml")
    assert load_campaign(str(tmp_path / "my-campaign.toml")).name == "my-campaign"


# -- figures ------------------------------------------------------------------------------------

def test_the_same_runs_draw_byte_identical_figures(tmp_path):
    """PNG and PDF carry no creation time, so a rebuilt report changes only where its data does."""
    runs, rows = [], []
    for method in ("M1", "M2"):
        for seed in (0, 1):
            key = f"{method}{seed}"
            runs.append({"name": f"poisson1d-{method}-jax-s{seed}-{key}", "key": key, "problem": "poisson1d",
                         "backend": "jax", "method": method, "seed": seed, "status": "complete", "error": 0.1})
            rows += [{"key": key, "step": step, "seconds": step / 100, "weight_boundary": 1.0 + step * (method == "M2"),
                      "rel_l2": 1.0 / (step + seed)} for step in range(1000, 40001, 1000)]
    drawn = []
    for attempt in ("first", "second"):
        figures, _ = build_figures(pd.DataFrame(runs), pd.DataFrame(rows), tmp_path / attempt, tmp_path)
        drawn.append({p.name: p.read_bytes() for f in figures for p in f.files})
    assert len(drawn[0]) == 6  # error-step, error-time, weights; PNG and PDF each
    assert drawn[0] == drawn[1]
    assert all(b"CreationDate" not in data for name, data in drawn[0].items() if name.endswith(".pdf"))
