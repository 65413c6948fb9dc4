"""The gradpath command: listing, one-line usage errors (exit 2), run records, divergence (1), interrupts (130)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pandas as pd
import pytest

import gradpath.backends
from gradpath.backends import training
from gradpath.backends.methods import GATES, METHODS
from gradpath.backends.training import TrainResult
from gradpath.backends.weighting import WEIGHTINGS
from gradpath.problems import problem_names
from gradpath.suite.cli.commands import main
from gradpath.suite.runs.record import CONFIG, GRADIENTS, HISTORY, MANIFEST, PARAMS, SUMMARY
from gradpath.suite.runs.store import Store

TINY = ["--iterations", "20", "--log-every", "10", "--width", "8", "--depth", "2"]


def _runs(out) -> list:
    """The run directories under ``out`` (not the store's .locks)."""
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gradpath: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_list_names_every_choice(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [*problem_names(), *METHODS, *WEIGHTINGS, *GATES, "jax", "torch", "standard", "tf1"]:
        assert name in out
    assert "a1=1.0 a2=4.0 k=1.0" in out  # helmholtz parameters with their defaults
    assert "builtin" in out
    assert "terms residual,initial,boundary" in out  # what --loss-weight TERM=VALUE may name (Klein-Gordon)


@pytest.mark.parametrize("args, message", [
    (["helmhotz"], "unknown problem 'helmhotz'; choose one of: cavity, helmholtz, "),
    (["helmhotz"], "(did you mean 'helmholtz'?)"),
    (["helmholtz", "--method", "M5"], "unknown method 'M5'; choose one of: M1, M2, M3, M4"),
    (["helmholtz", "--backend", "jx"], "unknown backend 'jx'; choose one of: jax, torch (did you mean 'jax'?)"),
    (["helmholtz", "--weighting", "cod"], "unknown weighting variant 'cod'"),
    (["helmholtz", "--gate", "papr"], "unknown gate form 'papr'"),
    (["helmholtz", "--adam-form", "tf2"], "unknown adam form 'tf2'; choose one of: standard, tf1"),
    (["helmholtz", "--dtype", "float16"], "unknown dtype 'float16'"),
    (["helmholtz", "--width", "0"], "--width must be a positive integer, got 0"),
    (["helmholtz", "--iterations", "-5"], "must be a positive integer, got -5"),
    (["helmholtz", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["helmholtz", "--anneal-alpha", "2"], "--anneal-alpha must lie in (0, 1]"),
    (["helmholtz", "--param", "zz=1"], "unknown parameter of helmholtz 'zz'; choose one of: a1, a2, k"),
    (["helmholtz", "--param", "a2"], "--param 'a2': not KEY=VALUE"),
    (["helmholtz", "--param", "a2=x"], "parameter a2 of helmholtz must be a number, got 'x'"),
    (["helmholtz", "--param", "a2=inf"], "parameter a2 of helmholtz must be finite, got 'inf'"),
    (["klein-gordon", "--param", "k=3.7"], "parameter k of klein-gordon must be an integer, got '3.7'"),
    # options the method does not use are refused: they would give the same run a second key
    (["helmholtz", "--method", "M1", "--gate", "paper"], "--gate applies to the gated network (M3, M4); M1 uses"),
    (["helmholtz", "--method", "M3", "--anneal-alpha", "0.5"], "apply to the methods that anneal (M2, M4); M3 keeps"),
    (["helmholtz", "--method", "M1", "--anneal-every", "20"], "apply to the methods that anneal (M2, M4)"),
    (["helmholtz", "--method", "M3", "--weighting", "paper"], "--weighting applies to the methods that anneal"),
    (["helmholtz", "--width", "x"], "argument --width: invalid int value: 'x'"),  # argparse's own errors
    (["helmholtz", "--lr", "nan"], "argument --lr: 'nan' is not a finite number"),
    (["helmholtz", "--lr", "fast"], "argument --lr: 'fast' is not a number"),
    (["helmholtz", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_usage_error_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    assert main(["run", *args, "--out", str(tmp_path)]) == 2
    assert message in _one_error_line(capsys)
    assert not any(tmp_path.iterdir())  # nothing was recorded


def test_missing_framework_is_a_usage_error(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "jax" else real(name, *a, **k))
    gradpath.backends.get_backend.cache_clear()  # a cached backend would skip the check
    assert main(["run", "helmholtz", "--backend", "jax", *TINY, "--out", str(tmp_path)]) == 2
    assert "backend 'jax' is not installed; install it with: pip install 'gradpath[jax]'" in _one_error_line(capsys)
    assert main(["list"]) == 0
    assert "not installed: pip install 'gradpath[jax]'" in capsys.readouterr().out


def test_run_end_to_end_writes_a_record_pandas_reads(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gradpath.suite", "run", "helmholtz", "--method", "M4", "--backend", "jax",
                           "--seed", "0", *TINY, "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (run,) = _runs(tmp_path)
    assert run.name.startswith("helmholtz-M4-jax-s0-")
    # gradients.npz: --gradient-every (default 10000) also records the last step
    assert {p.name for p in run.iterdir()} == {CONFIG, MANIFEST, HISTORY, SUMMARY, PARAMS, GRADIENTS}
    assert proc.stderr == ""  # no progress bar off a terminal
    assert str(run) in proc.stdout and "ms/step" in proc.stdout and "rel_l2" in proc.stdout

    history = pd.read_csv(run / HISTORY)
    assert list(history.columns)[:7] == ["step", "seconds", "loss_residual", "loss_boundary",
                                         "weight_residual", "weight_boundary", "rel_l2"]
    assert all(c.startswith("grad_") for c in history.columns[7:])
    assert history["step"].tolist() == [10, 20] and history["rel_l2"].notna().all()
    assert history["grad_max_residual_W0"].isna().tolist() == [True, False]  # the last step only
    summary = pd.read_json(run / SUMMARY, typ="series")
    assert summary["status"] == "complete" and summary["steps"] == 20 and not summary["diverged"]
    assert summary["error"] == pytest.approx(history["rel_l2"].iloc[-1])
    config = pd.json_normalize(json.loads((run / CONFIG).read_text())).iloc[0]
    assert config["backend"] == "jax" and config["parameters.a2"] == 4.0
    assert config["settings.steps"] == 20 and config["settings.layers"] == [2, 8, 8, 1]
    assert config["settings.weighting"] == "code"  # resolved from the problem's default
    manifest = json.loads((run / MANIFEST).read_text())
    assert manifest["seed"] == 0 and "jax" in manifest["versions"] and manifest["device"] == summary["device"]
    assert manifest["command"][:3] == ["gradpath", "run", "helmholtz"]
    params = np.load(run / PARAMS)
    assert params["W0"].shape == (2, 8) and params["loss_weights"].shape == (2,)


def test_gradpath_console_script_is_suite_cli_main():
    try:
        scripts = {ep.name: ep.value for ep in distribution("gradpath").entry_points if ep.group == "console_scripts"}
    except PackageNotFoundError:
        pytest.skip("gradpath is not installed (pip install -e .)")
    assert scripts["gradpath"] == "gradpath.suite.cli:main"


def test_diverged_run_exits_1_and_is_recorded(tmp_path, capsys):
    # the cubic term of Klein-Gordon overflows after one Adam step of size ~1e6
    code = main(["run", "klein-gordon", "--method", "M1", "--lr", "1e6", *TINY, "--quiet", "--out", str(tmp_path)])
    (run,) = _runs(tmp_path)
    err = _one_error_line(capsys)
    assert code == 1
    assert "run diverged at step " in err and f"recorded in {run / SUMMARY}" in err
    assert " is inf" in err or " is nan" in err
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["status"] == "diverged" and summary["diverged"] and summary["error"] is None
    assert pd.read_csv(run / HISTORY)["step"].iloc[-1] == summary["steps"]


def _fake_train(*, interrupt: bool = False, fail: bool = False):
    """A stand-in for gradpath.backends.training.train_seeds (one seed: `gradpath run` trains through
    the campaign job's path) that logs one row, then stops as asked."""
    row = {"step": 10, "seconds": 0.1, "loss_residual": 2.0, "loss_boundary": 1.0,
           "weight_residual": 1.0, "weight_boundary": 1.0, "rel_l2": 0.5}

    def train_seeds(problem, settings, backend, on_log=None, **options):
        (settings,) = settings
        on_log(0, dict(row))
        if interrupt:
            raise KeyboardInterrupt
        if fail:
            raise RuntimeError("a bug")
        summary = {"steps": settings.steps, "error": 0.5, "metric": "rel_l2", "diverged": False,
                   "diverged_at_step": None, "ms_per_step": 1.0, "compile_seconds": 0.1}
        return [TrainResult(history=[row], summary=summary, params={"W0": np.zeros((2, 8))})]

    return train_seeds


def test_complete_run_is_refused_unless_force(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(training, "train_seeds", _fake_train())
    args = ["run", "helmholtz", *TINY, "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a complete run; pass --force to overwrite" in _one_error_line(capsys)
    assert main([*args, "--force"]) == 0
    assert main([*args, "--seed", "1"]) == 0  # another configuration, another directory
    assert len(_runs(tmp_path)) == 2


def test_a_run_another_process_holds_is_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(training, "train_seeds", _fake_train())
    args = ["run", "helmholtz", *TINY, "--out", str(tmp_path)]
    assert main(args) == 0
    (run,) = _runs(tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    with Store(tmp_path).lock(run.name):  # as a campaign job training it holds it
        assert main([*args, "--force"]) == 2
    assert f"another process (a campaign job or another `gradpath run`) is training {run.name}" in _one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    assert main([*args, "--force"]) == 0  # once the lock is free


def test_interrupt_keeps_the_record_and_exits_130(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(training, "train_seeds", _fake_train(interrupt=True))
    assert main(["run", "helmholtz", *TINY, "--out", str(tmp_path)]) == 130
    (run,) = _runs(tmp_path)
    assert f"gradpath: interrupted; what was logged is kept in {run}" in capsys.readouterr().err
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 10 and summary["error"] == 0.5
    assert len(pd.read_csv(run / HISTORY)) == 1 and not (run / PARAMS).exists()
    monkeypatch.setattr(training, "train_seeds", _fake_train())
    assert main(["run", "helmholtz", *TINY, "--out", str(tmp_path)]) == 0  # an interrupted run may be redone


def test_a_bug_keeps_its_traceback_and_marks_the_run_failed(monkeypatch, tmp_path):
    monkeypatch.setattr(training, "train_seeds", _fake_train(fail=True))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["run", "helmholtz", *TINY, "--out", str(tmp_path)])
    (run,) = _runs(tmp_path)
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["status"] == "failed" and summary["failure"] == "RuntimeError: a bug"
    # the record says where, as a campaign worker's does (both keep records through gradpath.suite.runs.recording)
    assert "Traceback" in summary["traceback"] and "a bug" in summary["traceback"]
    assert summary["steps"] == 10 and summary["metric"] == "rel_l2"
