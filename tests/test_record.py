"""The run record: atomic JSON, row-by-row history, config hashes and run directories."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from gradpath.problems.errors import UsageError
from gradpath.suite.runs.record import (CONFIG, HISTORY, MANIFEST, PARAMS, SUMMARY, HistoryWriter, RunRecord, replace_atomically,
                          config_hash, read_status, run_name, write_json)

CONFIG_A = {"problem": "helmholtz", "parameters": {"a1": 1.0, "a2": 4.0}, "backend": "jax",
            "settings": {"method": "M4", "seed": 0, "lr": 1e-3, "layers": [2, 50, 50, 50, 1]}}


def _strict(text: str):
    def reject(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=reject)


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"x": 1})
    write_json(path, {"x": 2, "nested": {"y": [1, 2]}})
    assert _strict(path.read_text()) == {"x": 2, "nested": {"y": [1, 2]}}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"x": 1})

    def half_then_fail(f):
        f.write(b'{"x": 2')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(path, half_then_fail)
    with pytest.raises(TypeError):
        write_json(path, {"x": object()})
    assert _strict(path.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_json_is_strict_non_finite_becomes_null(tmp_path):
    path = tmp_path / "s.json"
    write_json(path, {"error": float("nan"), "loss": float("inf"), "n": np.int64(3), "x": np.float32(0.5)})
    assert _strict(path.read_text()) == {"error": None, "loss": None, "n": 3, "x": 0.5}


def test_history_rows_are_on_disk_as_soon_as_appended(tmp_path):
    writer = HistoryWriter(tmp_path / HISTORY)
    rows = [{"step": 10, "seconds": 0.5, "loss_residual": 2.0, "weight_boundary": 1.0, "rel_l2": 0.3},
            {"step": 20, "seconds": 1.0, "loss_residual": float("nan"), "weight_boundary": 1.5, "rel_l2": 0.2}]
    writer.append(rows[0])
    assert pd.read_csv(tmp_path / HISTORY).to_dict("records") == rows[:1]  # still open, already readable
    writer.append(rows[1])
    frame = pd.read_csv(tmp_path / HISTORY)
    writer.close()
    assert list(frame.columns) == list(rows[0])
    assert frame["step"].tolist() == [10, 20] and np.isnan(frame["loss_residual"][1])


def test_config_hash_is_stable_and_tells_configs_apart():
    reordered = {"settings": dict(reversed(CONFIG_A["settings"].items())), "backend": "jax",
                 "parameters": {"a2": 4.0, "a1": 1.0}, "problem": "helmholtz"}
    assert config_hash(CONFIG_A) == config_hash(reordered) == config_hash(json.loads(json.dumps(CONFIG_A)))
    other_lr = {**CONFIG_A, "settings": {**CONFIG_A["settings"], "lr": 2e-3}}
    other_param = {**CONFIG_A, "parameters": {"a1": 1.0, "a2": 1.0}}
    assert len({config_hash(CONFIG_A), config_hash(other_lr), config_hash(other_param)}) == 3
    # the digest of canonical JSON: a change here renames every existing run directory
    assert config_hash({"b": [1, 2.5], "a": 1}) == hashlib.sha256(b'{"a":1,"b":[1,2.5]}').hexdigest()[:8]


def test_run_name_reads_problem_method_backend_seed_hash():
    assert run_name(CONFIG_A) == f"helmholtz-M4-jax-s0-{config_hash(CONFIG_A)}"


def test_record_refuses_a_complete_run_unless_forced(tmp_path):
    record = RunRecord.create(tmp_path, CONFIG_A, {"seed": 0})
    assert read_status(record.path) == "running"
    record.history.append({"step": 1, "loss_residual": 1.0})
    record.finish("complete", {"error": 0.1}, {"W0": np.ones((2, 3))})
    assert {p.name for p in record.path.iterdir()} == {CONFIG, MANIFEST, HISTORY, SUMMARY, PARAMS}
    assert _strict((record.path / CONFIG).read_text()) == CONFIG_A
    assert np.load(record.path / PARAMS)["W0"].shape == (2, 3)
    with pytest.raises(UsageError, match="already holds a complete run; pass --force to overwrite"):
        RunRecord.create(tmp_path, CONFIG_A, {"seed": 0})
    again = RunRecord.create(tmp_path, CONFIG_A, {"seed": 0}, force=True)
    assert again.path == record.path and read_status(again.path) == "running"
    assert not (again.path / HISTORY).exists() and not (again.path / PARAMS).exists()  # no stale results


def test_an_unfinished_run_is_restarted_without_force(tmp_path):
    def leftovers(path):
        record.history.append({"step": 10, "loss_residual": 1.0})
        record.history.close()
        (path / PARAMS).write_bytes(b"stale")
        (path / "checkpoint.npz").write_bytes(b"stale")

    record = RunRecord.create(tmp_path, CONFIG_A, {})
    leftovers(record.path)
    record.finish("interrupted", {"steps": 10})
    assert read_status(record.path) == "interrupted"
    for damage in (None, "{not json"):  # an interrupted run, then one whose summary cannot be read
        if damage:
            leftovers(record.path)
            (record.path / SUMMARY).write_text(damage)
            assert read_status(record.path) is None
        record = RunRecord.create(tmp_path, CONFIG_A, {"started": "now"})
        assert read_status(record.path) == "running"
        assert _strict((record.path / MANIFEST).read_text()) == {"started": "now"}
        # a fresh start (no checkpoint given to go on from): nothing of the earlier attempt is left
        assert {p.name for p in record.path.iterdir()} == {CONFIG, MANIFEST, SUMMARY}


def test_a_diverged_run_is_done_too_and_refused_unless_forced(tmp_path):
    record = RunRecord.create(tmp_path, CONFIG_A, {"hostname": "a"})
    record.history.append({"step": 1, "loss_residual": float("nan")})
    record.finish("diverged", {"steps": 1}, {"W0": np.ones((2, 3))})
    with pytest.raises(UsageError, match="already holds a diverged run; pass --force to overwrite"):
        RunRecord.create(tmp_path, CONFIG_A, {"hostname": "b"})
    assert _strict((record.path / MANIFEST).read_text()) == {"hostname": "a"}  # untouched
    assert (record.path / PARAMS).exists() and (record.path / HISTORY).exists()


def test_a_record_of_a_failed_start_keeps_the_earlier_manifest_and_checkpoint(tmp_path):
    record = RunRecord.create(tmp_path, CONFIG_A, {"hostname": "first", "started": "t0"})
    record.finish("interrupted", {"steps": 10})
    (record.path / "checkpoint.npz").write_bytes(b"checkpoint")
    # the next process fails before it trains (a framework missing on this machine, say)
    failed = RunRecord.create(tmp_path, CONFIG_A, {"command": ["gradpath"]}, force=True, keep_checkpoint=True)
    failed.finish("failed", {"failure": "ModuleNotFoundError"})
    assert _strict((record.path / MANIFEST).read_text()) == {"hostname": "first", "started": "t0"}
    assert (record.path / "checkpoint.npz").read_bytes() == b"checkpoint"
    # a run with no earlier record still gets one that says how it was started
    other = dict(CONFIG_A, backend="torch")
    new = RunRecord.create(tmp_path, other, {"command": ["gradpath"]}, keep_checkpoint=True)
    assert _strict((new.path / MANIFEST).read_text()) == {"command": ["gradpath"]}
