"""The results store: which records count as done, gathering tables, and surviving SIGKILL."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from record_edits import edit_summary
from gradpath.suite.campaigns.definition import expand, load_campaign, parse_campaign
from gradpath.suite.cli.commands import main
from gradpath.suite.runs.record import CONFIG, HISTORY, PARAMS, SUMMARY, RunRecord, write_json
from gradpath.suite.runs.store import Store, gather, inspect_record, write_run_tables

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
TINY_TOML = """
name = "tiny"
[grid]
problem = ["poisson1d"]
method = ["M1", "M2"]
seed = [0, 1, 2]
[settings]
steps = 30
log_every = 10
width = 8
depth = 1
"""


def _spec(**settings):
    data = {"grid": {"problem": ["helmholtz"]}, "settings": {"steps": 20, "log_every": 10, **settings}}
    return expand(parse_campaign(data, "test"))[0]


def _fake_run(store: Store, spec, status="complete", rows=2, params=True):
    """A record as a run would leave it, without training."""
    record = RunRecord.create(store.root, spec.config, {"command": ["test"]}, force=True)
    for step in range(1, rows + 1):
        record.history.append({"step": 10 * step, "seconds": 0.1 * step, "loss_residual": 1.0 / step, "rel_l2": 0.5})
    summary = {"steps": 10 * rows, "error": 0.5, "metric": "rel_l2", "diverged": status == "diverged",
               "ms_per_step": 1.0, "device": "cpu"}
    record.finish(status, summary, {"W0": np.ones((2, 2))} if params else None)
    return store.path(spec)


def test_done_means_a_sound_complete_or_diverged_record(tmp_path):
    store = Store(tmp_path)
    spec = _spec()
    assert store.state(spec).status == "missing" and not store.state(spec).done
    path = _fake_run(store, spec)
    assert store.state(spec).status == "complete" and store.state(spec).done
    _fake_run(store, spec, status="diverged")
    assert store.state(spec).done
    for status in ("failed", "interrupted"):
        _fake_run(store, spec, status=status, params=False)
        assert store.state(spec).status == status and not store.state(spec).done
    RunRecord.create(store.root, spec.config, {}, force=True)  # what SIGKILL leaves
    assert store.state(spec).status == "running" and not store.state(spec).done
    assert path.name == spec.name and path.name.endswith(spec.key)


def _flipped(data: bytes) -> bytes:
    """``data`` with one byte inverted a third of the way in: inside an array, so the zip still opens."""
    at = len(data) // 3
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("damage, reason", [
    (lambda p: (p / SUMMARY).unlink(), "no summary.json"),
    (lambda p: (p / SUMMARY).write_text('{"status": "comp'), "summary.json unreadable"),
    (lambda p: (p / SUMMARY).write_text('["complete"]'), "summary.json unreadable"),
    (lambda p: (p / HISTORY).unlink(), "no history.csv"),
    (lambda p: (p / HISTORY).write_text("step,seconds\n10,0.1\n"),
     "history.csv ends at step 10, before the summary's step 20"),
    (lambda p: (p / HISTORY).write_text("step,seconds\n10,0.1\n20,0.2,9\n"), "wrong number of fields"),
    (lambda p: (p / HISTORY).write_text(""), "history.csv: empty"),
    (lambda p: (p / HISTORY).write_text("step,seconds\nabc,0.1\n20,0.2\n"), "line 2: step is 'abc', not a number"),
    (lambda p: (p / HISTORY).write_text("step,seconds\n10,0.1\n20,fast\n"), "line 3: seconds is 'fast', not a number"),
    (lambda p: (p / HISTORY).write_bytes(b"step,seconds\n10,0\x00.1\n20,0.2\n"), "history.csv: "),
    (lambda p: edit_summary(p, error="abc"), 'summary.json: error is "abc", not a number'),
    (lambda p: edit_summary(p, error=None), "a complete run without a finite error"),
    (lambda p: edit_summary(p, error=float("nan")), "a complete run without a finite error"),
    (lambda p: edit_summary(p, error=0), "a complete run with error 0, not a positive number"),
    (lambda p: edit_summary(p, error=-0.5), "a complete run with error -0.5, not a positive number"),
    (lambda p: edit_summary(p, error=...), "without a finite error (no error field)"),
    (lambda p: edit_summary(p, diverged=True), "complete, but diverged is true"),
    (lambda p: edit_summary(p, ms_per_step="fast"), 'ms_per_step is "fast", not a number'),
    (lambda p: edit_summary(p, steps=...), "no steps"),
    (lambda p: edit_summary(p, status="done"), 'status "done", not one of running, complete'),
    (lambda p: (p / PARAMS).write_bytes(b"PK\x03"), "params.npz missing or unreadable"),
    (lambda p: (p / PARAMS).write_bytes(_flipped((p / PARAMS).read_bytes())), "params.npz missing or unreadable"),
    (lambda p: write_json(p / CONFIG, {"problem": "other"}), "config.json does not match"),
])
def test_a_damaged_complete_record_is_redone(tmp_path, damage, reason):
    store = Store(tmp_path)
    spec = _spec()
    damage(_fake_run(store, spec))
    state = store.state(spec)
    assert state.status == "corrupt" and reason in state.reason and not state.done


def test_gather_makes_one_row_per_run_and_a_long_history(tmp_path):
    store = Store(tmp_path / "store")
    specs = [_spec(seed=s) for s in range(3)]
    _fake_run(store, specs[0], rows=2)
    _fake_run(store, specs[1], status="failed", rows=1, params=False)
    runs, history = gather(store, specs)
    assert list(runs["status"]) == ["complete", "failed", "missing"]
    assert list(runs["seed"]) == [0, 1, 2] and set(runs["problem"]) == {"helmholtz"}
    for column in ("key", "backend", "method", "width", "depth", "steps", "lr", "param_a2", "error", "metric",
                   "steps_done", "ms_per_step", "diverged", "status"):
        assert column in runs, column
    assert runs.loc[0, "steps"] == 20 and runs.loc[0, "steps_done"] == 20  # planned vs done, not clashing
    assert len(history) == 3 and set(history["key"]) == {specs[0].key, specs[1].key}
    written = write_run_tables(tmp_path / "out", runs, history)
    assert [p.name for p in written] == ["runs.parquet", "runs.csv", "history.parquet"]
    back = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    assert list(back["key"]) == [s.key for s in specs]
    all_runs, _ = gather(store)  # the whole store: only what is on disk
    assert len(all_runs) == 2


def _records(store: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in store.glob(f"*/{SUMMARY}")}


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory):
    """Run a 6-run campaign with --jobs 1, SIGKILL it while its second job is in flight, then resume it."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    root = tmp_path_factory.mktemp("kill")
    source, store = root / "tiny.toml", root / "store"
    source.write_text(TINY_TOML)
    command = [sys.executable, "-m", "gradpath.suite", "campaign", str(source), "--store", str(store), "--jobs", "1"]
    proc = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    first_done = time.monotonic()
    deadline = first_done + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            statuses = [s.get("status") for s in _records(store).values()]
            # kill once the first job (the 3 seeds of one method) is complete and the second is in
            # flight: its records say running from before its first step until after its last (the
            # 30 s only bound a worker that never starts)
            if statuses.count("complete") >= 3 and ("running" in statuses or time.monotonic() > first_done + 30):
                break
            if "complete" not in statuses:
                first_done = time.monotonic()
            time.sleep(0.02)
        assert proc.poll() is None, "the campaign ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    orphans = True
    for _ in range(50):  # workers notice their parent is gone within 0.5 s and exit
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            orphans = False
            break
        time.sleep(0.1)
    after_kill = _records(store)
    specs = expand(load_campaign(str(source)))
    states_after_kill = {s.name: Store(store).state(s) for s in specs}
    resumed = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    return {"store": store, "specs": specs, "after_kill": after_kill, "orphans": orphans, "states": states_after_kill,
            "resumed": resumed, "source": source, "root": root}


def test_sigkill_loses_only_runs_in_flight(killed_then_resumed):
    after_kill, states = killed_then_resumed["after_kill"], killed_then_resumed["states"]
    done = [name for name, state in states.items() if state.done]
    assert len(done) >= 1
    for name, summary in after_kill.items():
        assert summary["status"] in ("complete", "running"), (name, summary)  # nothing torn, nothing failed
        if summary["status"] == "complete":
            assert states[name].done  # a record that says complete is a sound one
    # --jobs 1: in flight is one job, the 3 seeds of one method trained together (--lanes default 10)
    running = [name for name, s in after_kill.items() if s["status"] == "running"]
    assert 1 <= len(running) <= 3 and len({name.split("-")[1] for name in running}) == 1, running
    assert not any(states[name].done for name in running)  # killed in flight: redone, never counted as done
    assert not killed_then_resumed["orphans"], "a worker outlived the killed campaign"


def test_resume_completes_every_run_exactly_once(killed_then_resumed):
    store, specs, resumed = killed_then_resumed["store"], killed_then_resumed["specs"], killed_then_resumed["resumed"]
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    done_before = sum(state.done for state in killed_then_resumed["states"].values())
    assert f"6 runs, {done_before} already done; this time: {6 - done_before} complete" in resumed.stdout
    dirs = sorted(p.name for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert dirs == sorted(s.name for s in specs)  # one directory per run, no strays
    for spec in specs:
        assert Store(store).state(spec).status == "complete"
        history = pd.read_csv(store / spec.name / HISTORY)
        assert list(history["step"]) == [10, 20, 30]  # no duplicated or torn rows
        assert not list((store / spec.name).glob(".*"))  # no temporary files left behind
    runs = pd.read_parquet(store / "runs.parquet")
    assert sorted(runs["key"]) == sorted(s.key for s in specs) and set(runs["status"]) == {"complete"}
    assert len(pd.read_parquet(store / "history.parquet")) == 6 * 3


def test_report_rebuilds_tables_from_the_store(killed_then_resumed, capsys):
    root, store = killed_then_resumed["root"], killed_then_resumed["store"]
    out = root / "report"
    assert main(["report", "--preset", str(killed_then_resumed["source"]), "--store", str(store),
                 "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"runs.csv", "runs.parquet", "history.parquet", "REPORT.md", "poisson1d.csv", "poisson1d.md",
            "poisson1d.tex"} <= names
    report = (out / "REPORT.md").read_text()
    assert "6 runs planned: 6 complete" in report and "`steps`: 30 (default 40001)" in report
    cells = pd.read_csv(out / "poisson1d.csv")
    assert list(cells["method"]) == ["M1", "M2"] and list(cells["n"]) == [3, 3]
    # a hand-written findings.md survives the rebuild and goes into REPORT.md verbatim
    (out / "findings.md").write_text("M2 halves the error here; see the table.\n")
    assert main(["report", "--preset", str(killed_then_resumed["source"]), "--store", str(store),
                 "--out", str(out)]) == 0
    assert (out / "findings.md").read_text() == "M2 halves the error here; see the table.\n"
    assert "## Findings" in (out / "REPORT.md").read_text()
    assert "M2 halves the error here; see the table." in (out / "REPORT.md").read_text()
    assert main(["report", "--preset", "tiny.toml", "--store", str(root / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


@needs_jax
def test_dry_run_tells_partial_runs_apart(tmp_path, capsys):
    store = Store(tmp_path / "store")
    source = tmp_path / "tiny.toml"
    source.write_text(TINY_TOML)
    specs = expand(load_campaign(str(source)))
    _fake_run(store, specs[0], rows=3)
    RunRecord.create(store.root, specs[1].config, {}, force=True)
    assert inspect_record(store.path(specs[1])).status == "running"
    assert main(["campaign", str(source), "--store", str(store.root), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("done") and lines[1].startswith("redo (running)") and lines[2].startswith("to run")
    assert "6 runs, 1 done, 5 to run" in lines[-1]


def test_restore_rebuilds_a_lost_store_from_the_published_tables(killed_then_resumed, capsys):
    """A store lost with its machine comes back from results/<campaign>/ with every finished run:
    the same runs table (plus where it came from), the same history, the same cell statistics,
    and a campaign on it trains nothing."""
    root, store, source = killed_then_resumed["root"], killed_then_resumed["store"], killed_then_resumed["source"]
    published, rebuilt, again = root / "published", root / "rebuilt-store", root / "republished"
    assert main(["report", "--preset", str(source), "--store", str(store), "--out", str(published)]) == 0
    capsys.readouterr()
    assert main(["restore", "--preset", str(source), "--from", str(published), "--store", str(rebuilt)]) == 0
    assert "6 runs; from" in (out := capsys.readouterr().out) and "6 restored" in out
    assert all(Store(rebuilt).state(spec).done for spec in killed_then_resumed["specs"])
    assert main(["report", "--preset", str(source), "--store", str(rebuilt), "--out", str(again)]) == 0
    before, after = pd.read_parquet(published / "runs.parquet"), pd.read_parquet(again / "runs.parquet")
    assert set(after["restored_from"]) == {str(published / "runs.parquet")}
    pd.testing.assert_frame_equal(before, after.drop(columns="restored_from"))
    history = [pd.read_parquet(d / "history.parquet").sort_values(["key", "step"], ignore_index=True)
               for d in (published, again)]
    pd.testing.assert_frame_equal(*history)
    assert (published / "poisson1d.csv").read_text() == (again / "poisson1d.csv").read_text()
    report = (again / "REPORT.md").read_text()
    assert "6 runs restored from" in report
    # a new results directory has no earlier solution figure to keep: it says why it draws none
    assert "was restored from" in report and "no earlier figure of exactly these runs to keep" in report
    # rebuilt where it was published, the figure drawn from the lost store's parameters is kept as drawn,
    # and a file no figure of the build claims is removed
    (published / "figures" / "gone.png").write_bytes(b"")
    assert main(["report", "--preset", str(source), "--store", str(rebuilt), "--out", str(published)]) == 0
    report = (published / "REPORT.md").read_text()
    assert "Drawn by an earlier build of this report" in report and "keeps no parameters" not in report
    assert "](figures/fields-poisson1d.png)" in report
    assert (published / "figures" / "fields-poisson1d.png").is_file() and not (published / "figures" / "gone.png").exists()
    # restoring again keeps what the store holds; a campaign on the rebuilt store trains nothing
    capsys.readouterr()
    assert main(["restore", "--preset", str(source), "--from", str(published), "--store", str(rebuilt)]) == 0
    assert "0 restored, 6 already done in the store (kept)" in capsys.readouterr().out
    assert main(["campaign", str(source), "--store", str(rebuilt), "--jobs", "1", "--quiet"]) == 0
    assert "6 runs, 6 already done" in capsys.readouterr().out


def test_restore_leaves_out_what_the_tables_cannot_rebuild(killed_then_resumed, tmp_path, capsys):
    source, specs = killed_then_resumed["source"], killed_then_resumed["specs"]
    published = tmp_path / "published"
    assert main(["report", "--preset", str(source), "--store", str(killed_then_resumed["store"]),
                 "--out", str(published)]) == 0
    runs = pd.read_parquet(published / "runs.parquet")
    runs.loc[runs["key"] == specs[0].key, "status"] = "interrupted"  # not finished: trained again
    runs.to_parquet(published / "runs.parquet", index=False)
    history = pd.read_parquet(published / "history.parquet")
    history[history["key"] != specs[1].key].to_parquet(published / "history.parquet", index=False)
    capsys.readouterr()
    rebuilt = tmp_path / "store"
    assert main(["restore", "--preset", str(source), "--from", str(published), "--store", str(rebuilt)]) == 0
    out = capsys.readouterr().out
    assert "4 restored" in out and "1 not finished in the table" in out and "1 finished without a history" in out
    states = [Store(rebuilt).state(spec) for spec in specs]
    assert [s.status for s in states[:2]] == ["missing", "missing"] and all(s.done for s in states[2:])
    # a directory without the tables: one line naming what is missing and what to name instead
    assert main(["restore", "--preset", str(source), "--from", str(tmp_path), "--store", str(rebuilt)]) == 2
    err = capsys.readouterr().err
    assert "has no runs.parquet or history.parquet" in err and "gradpath report" in err


def test_restore_gives_back_each_file_and_settles_what_the_store_holds(tmp_path):
    """Record by record: summary and manifest as written (nulls included), the history's columns
    even for a run that diverged at once, an unfinished store record replaced, a done one kept,
    one that another process is training left alone."""
    from gradpath.suite.runs.restore import restore

    specs = [_spec(seed=seed) for seed in range(4)] + [_spec(seed=0, steps=30)]
    lost = Store(tmp_path / "lost")
    for spec in specs[:4]:
        _fake_run(lost, spec, rows=3)
    # a run that diverged before its first log: its metric is NaN throughout, its summary's error null
    record = RunRecord.create(lost.root, specs[4].config, {"command": ["test"]}, force=True)
    record.history.append({"step": 10, "seconds": 0.1, "loss_residual": float("nan"), "rel_l2": float("nan")})
    record.finish("diverged", {"steps": 10, "error": None, "metric": "rel_l2", "rel_l2": None, "diverged": True,
                               "diverged_at_step": 9, "ms_per_step": 1.0, "device": "cpu"}, {"W0": np.ones(1)})
    published = tmp_path / "published"
    write_run_tables(published, *gather(lost, specs))

    store = Store(tmp_path / "store")
    _fake_run(store, specs[1], rows=3)  # done: kept
    _fake_run(store, specs[2], status="failed", rows=1, params=False)  # not done: replaced
    with store.lock(specs[3]):  # a campaign is training it: left alone, without waiting
        started = time.monotonic()
        done = restore(specs, published, store)
        assert time.monotonic() - started < 10
    assert (done.restored, done.in_store, done.replaced, done.busy) == (
        [specs[0].name, specs[4].name], [specs[1].name], [specs[2].name], [specs[3].name])
    for spec in (specs[0], specs[2], specs[4]):
        old, new = lost.path(spec), store.path(spec)
        assert Store(store.root).state(spec).done
        summary = json.loads((new / SUMMARY).read_text())
        assert summary.pop("restored_from") == str(published / "runs.parquet")
        original = json.loads((old / SUMMARY).read_text())
        assert {k: v for k, v in summary.items() if k != "finished" and v is not None} == \
            {k: v for k, v in original.items() if k != "finished" and v is not None}
        assert pd.read_csv(new / HISTORY).equals(pd.read_csv(old / HISTORY))
    diverged = json.loads((store.path(specs[4]) / SUMMARY).read_text())
    assert diverged["error"] is None and diverged["rel_l2"] is None and diverged["diverged_at_step"] == 9
    assert not (store.path(specs[3])).exists()
