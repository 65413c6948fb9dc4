"""Checkpoints: a run stopped part-way goes on to exactly the run that never stopped."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from gradpath.backends import conformance as kit
from gradpath.backends.checkpoint import Checkpoint, CheckpointMismatch
from gradpath.backends.settings import TrainSettings
from gradpath.backends.training import train_seeds
from gradpath.problems import get_problem
from gradpath.suite.runs import job
from gradpath.suite.runs import recording
from gradpath.suite.campaigns.definition import expand, parse_campaign
from gradpath.suite.runs.record import CHECKPOINT, HISTORY, MANIFEST, SUMMARY, load_checkpoint, save_checkpoint
from gradpath.suite.runs.store import Store

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
# float32 as campaigns train; eager torch keeps the test short (restoring does not touch compiling)
TINY = dict(method="M4", steps=60, log_every=10, width=10, depth=2, compile=False)


@pytest.mark.parametrize("seeds", [(0,), (0, 3)], ids=["one-seed", "two-lanes"])
def test_a_resumed_run_equals_the_uninterrupted_one_exactly(backend, seeds):
    kit.check_resumes(backend, get_problem("poisson1d"), "M4", seeds, steps=60, gradient_every=20, dtype="float32",
                      width=10)


def test_a_compiled_torch_run_resumes_exactly():
    pytest.importorskip("torch")  # campaigns compile: the restored state must fit the compiled graphs
    kit.check_resumes("torch", get_problem("poisson1d"), "M2", (0, 1), steps=20, dtype="float32", compile=True)


def test_a_group_that_comes_back_split_goes_on_vectorised(backend):
    # e.g. another --lanes after the stop: each part goes on from the same checkpoints, and a seed
    # left alone keeps the batched kernels (lanes=1), so it differs from the whole only by rounding
    problem = get_problem("poisson1d")
    settings = [TrainSettings(seed=s, **TINY) for s in (0, 3, 5)]
    whole = train_seeds(problem, settings, backend)
    checkpoints = kit.checkpoints_at(backend, problem, settings, 30)
    parts = train_seeds(problem, settings[:1], backend, resume=checkpoints[:1]) + \
        train_seeds(problem, settings[1:], backend, resume=checkpoints[1:])
    assert [r.summary["vectorised_seeds"] for r in parts] == [1, 2, 2]
    for a, b in zip(whole, parts):
        assert b.summary["resumed_at_steps"] == [30] and len(b.history) == len(a.history)
        for k in a.params:
            assert np.max(np.abs(a.params[k] - b.params[k])) <= 1e-5 * np.max(np.abs(a.params[k])), k


def test_a_checkpoint_that_does_not_fit_is_refused(backend):
    problem = get_problem("poisson1d")
    settings = [TrainSettings(seed=s, **TINY) for s in (0, 1)]
    checkpoints = kit.checkpoints_at(backend, problem, settings, 20)
    wider = [TrainSettings(seed=s, **{**TINY, "width": 12}) for s in (0, 1)]
    with pytest.raises(CheckpointMismatch, match="does not fit this run"):
        train_seeds(problem, wider, backend, resume=checkpoints)
    shorter = [TrainSettings(seed=s, **{**TINY, "steps": 20}) for s in (0, 1)]
    with pytest.raises(CheckpointMismatch, match="cannot go on to step 20"):
        train_seeds(problem, shorter, backend, resume=checkpoints)
    checkpoints[1].step = 10
    with pytest.raises(CheckpointMismatch, match=r"resume from one step; got \[10, 20\]"):
        train_seeds(problem, settings, backend, resume=checkpoints)
    with pytest.raises(CheckpointMismatch, match="1 checkpoints for 2 seeds"):
        train_seeds(problem, settings, backend, resume=checkpoints[:1])
    checkpoints[1].step = 20
    for c in checkpoints:  # as if a later gradpath logged another column: it could not append to these rows
        c.history = [{**row, "new_metric": 0.0} for row in c.history]
    with pytest.raises(CheckpointMismatch, match="history has other columns"):
        train_seeds(problem, settings, backend, resume=checkpoints)
    with pytest.raises(CheckpointMismatch, match="history has other columns"):  # no gradient statistics in it
        train_seeds(problem, settings, backend, resume=kit.checkpoints_at(backend, problem, settings, 20),
                    gradient_every=10)


def test_checkpoint_file_round_trips_and_a_damaged_one_is_ignored(tmp_path):
    checkpoint = Checkpoint(step=20, state={"params/W0": np.arange(6, dtype=np.float32).reshape(2, 3),
                                            "count": np.array(20, np.int32)},
                            batches={"bit_generator": "PCG64", "state": {"state": 2**100 + 1, "inc": 7}},
                            done=20, diverged_at=None, seconds=1.5, executed=20, chunk_ms=[0.5, 0.25], wall=2.0,
                            compile_seconds=3.0, history=[{"step": 10, "rel_l2": float("nan")}], resumed_at=[10])
    save_checkpoint(tmp_path, checkpoint)
    back = load_checkpoint(tmp_path)
    assert back.step == 20 and back.batches == checkpoint.batches and back.resumed_at == [10]
    assert back.state["params/W0"].dtype == np.float32 and back.state["count"].dtype == np.int32
    np.testing.assert_array_equal(back.state["params/W0"], checkpoint.state["params/W0"])
    assert np.isnan(back.history[0]["rel_l2"]) and back.gradients is None
    assert not list(tmp_path.glob(".*"))  # written atomically, no temporary left
    data = (tmp_path / CHECKPOINT).read_bytes()
    for damaged in (b"not a zip file", data[: len(data) // 2]):  # garbage, and a torn copy (BadZipFile)
        (tmp_path / CHECKPOINT).write_bytes(damaged)
        assert load_checkpoint(tmp_path) is None
        assert not (tmp_path / CHECKPOINT).exists()  # removed: the run starts afresh, once
    assert load_checkpoint(tmp_path / "elsewhere") is None


def _specs(steps=40):
    data = {"grid": {"problem": ["poisson1d"], "method": ["M2"], "seed": [0, 1], "backend": ["jax"]},
            "settings": {"steps": steps, "log_every": 10, "width": 8, "depth": 1}}
    return expand(parse_campaign(data, "test"))


def _interrupt_after(monkeypatch, step):
    """Make the campaign's checkpoints come after every chunk and 'kill' the job after the one at ``step``."""
    monkeypatch.setattr(job, "CHECKPOINT_EVERY", 0.0)
    real = recording.save_checkpoint

    def save_then_stop(directory, checkpoint):
        real(directory, checkpoint)
        if checkpoint.step == step and str(directory).endswith(_specs()[-1].name):
            raise KeyboardInterrupt

    monkeypatch.setattr(recording, "save_checkpoint", save_then_stop)


def _stopped_campaign_job(tmp_path, monkeypatch):
    """The runs of :func:`_specs` in a store, stopped after their checkpoints at step 20."""
    specs, store = _specs(), Store(tmp_path / "store")
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 20)
        job.run_group(specs, str(store.root), ["test"])
    return specs, store


@needs_jax
def test_a_stopped_campaign_job_goes_on_from_its_checkpoints(tmp_path, monkeypatch):
    specs = _specs()
    whole = Store(tmp_path / "whole")
    assert [o["status"] for o in job.run_group(specs, str(whole.root), ["test"])] == ["complete"] * 2
    assert not any((whole.path(s) / CHECKPOINT).exists() for s in specs)  # a done run keeps none

    store = Store(tmp_path / "store")
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 20)
        outcomes = job.run_group(specs, str(store.root), ["test"])
    assert [o["status"] for o in outcomes] == ["interrupted"] * 2
    assert all(load_checkpoint(store.path(s)).step == 20 for s in specs)
    with monkeypatch.context() as patch:  # stopped a second time, after going on
        _interrupt_after(patch, 30)
        outcomes = job.run_group(specs, str(store.root), ["test"])
    assert [o["status"] for o in outcomes] == ["interrupted"] * 2

    outcomes = job.run_group(specs, str(store.root), ["test"])
    assert [o["status"] for o in outcomes] == ["complete"] * 2
    for spec in specs:
        summary = json.loads((store.path(spec) / SUMMARY).read_text())
        assert summary["resumed_at_steps"] == [20, 30] and summary["steps"] == 40
        assert summary["error"] == json.loads((whole.path(spec) / SUMMARY).read_text())["error"]
        ours, theirs = (pd.read_csv(s.path(spec) / HISTORY).drop(columns="seconds") for s in (store, whole))
        pd.testing.assert_frame_equal(ours, theirs)  # every row once, the same numbers
        about = json.loads((store.path(spec) / MANIFEST).read_text())
        assert [e["stopped_at_step"] for e in about["earlier_processes"]] == [20, 30]
        assert about["first_started"] == about["earlier_processes"][0]["started"] <= about["started"]
        assert not (store.path(spec) / CHECKPOINT).exists()
        params = [np.load(s.path(spec) / "params.npz") for s in (store, whole)]
        for k in params[1].files:
            np.testing.assert_array_equal(params[0][k], params[1][k])


@needs_jax
def test_checkpoints_that_no_longer_fit_are_dropped_and_the_runs_start_afresh(tmp_path, monkeypatch):
    specs, store = _stopped_campaign_job(tmp_path, monkeypatch)
    for spec in specs:  # as if the trainer's state had gained an entry since
        checkpoint = load_checkpoint(store.path(spec))
        checkpoint.state["extra"] = np.zeros(1)
        save_checkpoint(store.path(spec), checkpoint)
    outcomes = job.run_group(specs, str(store.root), ["test"])
    assert [o["status"] for o in outcomes] == ["complete"] * 2
    for spec in specs:
        summary = json.loads((store.path(spec) / SUMMARY).read_text())
        assert summary["resumed_at_steps"] == [] and summary["steps"] == 40
        assert list(pd.read_csv(store.path(spec) / HISTORY)["step"]) == [10, 20, 30, 40]


@needs_jax
def test_a_run_that_cannot_start_keeps_its_checkpoint(tmp_path, monkeypatch):
    specs, store = _stopped_campaign_job(tmp_path, monkeypatch)

    def broken(*args, **kwargs):
        raise RuntimeError("no such device today")

    with monkeypatch.context() as patch:
        patch.setattr(job, "get_problem", broken)
        outcomes = job.run_group(specs, str(store.root), ["test"])
    assert [o["status"] for o in outcomes] == ["failed"] * 2
    assert all(load_checkpoint(store.path(s)).step == 20 for s in specs)
    # the manifest still names the process that trained the first 20 steps, not the one that failed
    assert all("started" in json.loads((store.path(s) / MANIFEST).read_text()) for s in specs)
    outcomes = job.run_group(specs, str(store.root), ["test"])
    assert [o["status"] for o in outcomes] == ["complete"] * 2
    for spec in specs:
        assert json.loads((store.path(spec) / SUMMARY).read_text())["resumed_at_steps"] == [20]


# 40 steps of gradpath run with a checkpoint after every chunk of 10
RUN_COMMAND = ["run", "poisson1d", "--steps", "40", "--log-every", "10", "--width", "8", "--depth", "1",
               "--checkpoint-every", "1e-9", "--quiet"]


def _stopped_at_step_20(monkeypatch, command: list[str]) -> None:
    """Run ``command`` (gradpath run) until its checkpoint at step 20 is saved, then Ctrl-C it."""
    from gradpath.suite.cli import commands as cli

    real = recording.save_checkpoint

    def save_then_stop(directory, checkpoint):
        real(directory, checkpoint)
        if checkpoint.step == 20:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(recording, "save_checkpoint", save_then_stop)
        assert cli.main(command) == 130


@needs_jax
def test_gradpath_run_goes_on_from_its_checkpoint_and_force_starts_afresh(tmp_path, monkeypatch, capsys):
    from gradpath.suite.cli import commands as cli

    command = RUN_COMMAND
    assert cli.main([*command, "--out", str(tmp_path / "whole")]) == 0
    _stopped_at_step_20(monkeypatch, [*command, "--out", str(tmp_path / "runs")])
    assert "and its last checkpoint is kept" in capsys.readouterr().err
    assert cli.main([*command, "--out", str(tmp_path / "runs")]) == 0
    (run,), (whole,) = ([p for p in (tmp_path / out).iterdir() if p.name != ".locks"] for out in ("runs", "whole"))
    assert json.loads((run / SUMMARY).read_text())["resumed_at_steps"] == [20]
    pd.testing.assert_frame_equal(pd.read_csv(run / HISTORY).drop(columns="seconds"),
                                  pd.read_csv(whole / HISTORY).drop(columns="seconds"))
    assert not (run / CHECKPOINT).exists()
    _stopped_at_step_20(monkeypatch, [*command, "--out", str(tmp_path / "runs"), "--force"])  # --force: afresh
    assert cli.main([*command, "--out", str(tmp_path / "runs"), "--force"]) == 0
    assert json.loads((run / SUMMARY).read_text())["resumed_at_steps"] == []
    assert cli.main([*command[:-3], "--checkpoint-every", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "must be a non-negative number, got -1" in capsys.readouterr().err


@needs_jax
def test_gradpath_run_starts_afresh_from_a_checkpoint_that_no_longer_fits(tmp_path, monkeypatch, capsys):
    from gradpath.suite.cli import commands as cli

    command = [*RUN_COMMAND, "--out", str(tmp_path)]
    _stopped_at_step_20(monkeypatch, command)
    (run,) = [p for p in tmp_path.iterdir() if p.name != ".locks"]
    checkpoint = load_checkpoint(run)
    checkpoint.state["extra"] = np.zeros(1)  # as if the trainer's state had gained an entry since
    save_checkpoint(run, checkpoint)
    capsys.readouterr()
    assert cli.main(command) == 0
    assert "starting afresh" in capsys.readouterr().err
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["status"] == "complete" and summary["resumed_at_steps"] == [] and summary["steps"] == 40
    assert list(pd.read_csv(run / HISTORY)["step"]) == [10, 20, 30, 40]
