"""What `gradpath` refuses before it starts, and how it stops (issue 23: D4, D5, D6, D8, D9, D11, D12).

A run that cannot fit in memory, a size past its bound, a problem whose error is undefined: each is
a one-line usage error (exit 2) that leaves nothing on disk. Memory that still runs out is exit 3 and
a ``failed`` record; SIGTERM stops a run, or a campaign worker, as Ctrl-C does.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from gradpath.backends import training
from gradpath.backends.settings import MAX_BATCH, MAX_DEPTH, MAX_STEPS, MAX_WIDTH, TrainSettings
from gradpath.problems import get_problem
from gradpath.problems.cavity import Cavity
from gradpath.suite.cli import commands as cli
from gradpath.suite.runs import resources
from gradpath.suite.campaigns.definition import expand, parse_campaign
from gradpath.suite.cli.commands import EXIT_INTERRUPTED, EXIT_OUT_OF_MEMORY, EXIT_USAGE, main
from gradpath.suite.campaigns.schedule import CampaignResult
from gradpath.suite.runs.job import run_group
from gradpath.suite.runs.progress import Progress
from gradpath.suite.runs.record import CHECKPOINT, HISTORY, SUMMARY
from gradpath.suite.runs.resources import GIB, estimate_memory
from gradpath.suite.runs.store import Store

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--iterations", "2", "--log-every", "1", "--width", "4", "--depth", "1", "--batch-size", "4", "--quiet"]
MACHINE = 16 * GIB  # what the tests say the machine has, so that refusals do not depend on the machine


@pytest.fixture(autouse=True)
def sixteen_gib(monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda: MACHINE)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gradpath: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _nothing_in(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


# -- D4, D5: memory and size bounds, before anything is allocated -----------------------------------

@pytest.mark.parametrize("args, largest", [
    (["--width", "100000", "--depth", "50"], "parameters and Adam state"),  # D4: numpy's 74.5 GiB traceback
    (["--batch-size", "50000000"], "training step"),  # D5: grew to 24 GB and was killed
])
def test_a_run_too_large_for_memory_is_refused_with_its_estimate(args, largest, capsys, tmp_path):
    out = tmp_path / "runs"
    assert main(["run", "helmholtz", *args, "--iterations", "2", "--out", str(out)]) == EXIT_USAGE
    err = _error_line(capsys)
    assert "this run needs about " in err and "of memory (" in err and "but this machine has 16 GiB available" in err
    estimate = estimate_memory(get_problem("helmholtz"),
                               TrainSettings(steps=2, **{a[2:].replace("-", "_"): int(v) for a, v in zip(args[::2], args[1::2])}),
                               "jax")
    assert estimate.largest() == largest and f"{largest} " in err and estimate.total > MACHINE
    assert _nothing_in(out)  # not even the store directory


@pytest.mark.parametrize("option, bound", [("--iterations", MAX_STEPS), ("--width", MAX_WIDTH), ("--depth", MAX_DEPTH),
                                           ("--batch-size", MAX_BATCH), ("--lr-decay-steps", MAX_STEPS),
                                           ("--log-every", MAX_STEPS), ("--anneal-every", MAX_STEPS)])
def test_sizes_past_their_bound_are_refused(option, bound, capsys, tmp_path):
    method = ["--method", "M2"] if option == "--anneal-every" else []
    for value in (bound + 1, 99999999999999999999999):  # D5: the second was accepted
        assert main(["run", "helmholtz", *method, option, str(value), "--out", str(tmp_path)]) == EXIT_USAGE
        assert f"{option} must be at most {bound:,}, got {value:,}" in _error_line(capsys)
    assert _nothing_in(tmp_path)


def test_the_estimate_grows_with_what_the_run_holds():
    problem = get_problem("helmholtz")
    base = estimate_memory(problem, TrainSettings(), "jax")
    assert base.total < GIB  # the paper's run: the runtime, and little else
    for more in (dict(batch_size=1280), dict(width=500), dict(depth=30), dict(method="M4"), dict(dtype="float64")):
        assert estimate_memory(problem, TrainSettings(**more), "jax").total > base.total, more
    # the step's activations are linear in the batch; lanes multiply everything but the runtime
    steps = [estimate_memory(problem, TrainSettings(batch_size=b), "jax").transients["training step"]
             for b in (10_000, 20_000, 40_000)]
    assert steps[2] - steps[1] == pytest.approx(2 * (steps[1] - steps[0]), rel=1e-3)
    one, ten = (estimate_memory(problem, TrainSettings(batch_size=10_000), "jax", lanes) for lanes in (1, 10))
    runtime = one.parts["runtime"]
    assert ten.total - runtime == pytest.approx(10 * (one.total - runtime), rel=1e-6)
    # an unknown backend gets the largest calibrated factor
    assert estimate_memory(problem, TrainSettings(batch_size=10_000), "other").total >= \
        estimate_memory(problem, TrainSettings(batch_size=10_000), "torch").total


def test_a_campaign_job_too_large_for_memory_fails_before_it_trains(tmp_path):
    specs = expand(parse_campaign({"grid": {"problem": ["helmholtz"], "seed": [0, 1]},
                                   "settings": {"steps": 2, "batch_size": 20_000_000}}, "test"))
    store = Store(tmp_path / "store")
    outcomes = run_group(specs, str(store.root), ["campaign", "test"])
    for spec, outcome in zip(specs, outcomes):
        assert outcome["status"] == "failed" and "this run needs about" in outcome["message"]
        assert "--lanes" in outcome["message"]  # the two seeds would train as one vectorised job
        summary = json.loads((store.path(spec) / SUMMARY).read_text())
        assert summary["status"] == "failed" and "needs about" in summary["failure"]
        assert not (store.path(spec) / HISTORY).exists()  # nothing trained


def _fake_train(exc: BaseException):
    """A stand-in for gradpath.backends.training.train_seeds (`gradpath run` trains through the
    campaign job's path) that logs one row, then raises ``exc``."""

    def train_seeds(problem, settings, backend, on_log=None, **options):
        on_log(0, {"step": 1, "seconds": 0.1, "loss_residual": 2.0, "loss_boundary": 1.0,
                   "weight_residual": 1.0, "weight_boundary": 1.0, "rel_l2": 0.5})
        raise exc

    return train_seeds


@pytest.mark.parametrize("exc", [MemoryError("Unable to allocate 74.5 GiB"),
                                 RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")])
def test_memory_that_runs_out_anyway_is_exit_3_and_a_failed_record(exc, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(training, "train_seeds", _fake_train(exc))
    assert main(["run", "helmholtz", *TINY, "--out", str(tmp_path)]) == EXIT_OUT_OF_MEMORY
    err = _error_line(capsys)
    assert "out of memory while training" in err and "recorded as failed" in err
    (run,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["status"] == "failed" and summary["failure"].startswith(type(exc).__name__)
    assert summary["steps"] == 1  # what was logged stays


# -- D6, D9: problem parameters, checked before any record ---------------------------------------

@pytest.mark.parametrize("args, message", [
    (["poisson1d", "--param", "C=0"], "poisson1d with C=0.0: the exact solution has norm 0 on the test grid, so rel_l2"),
    (["helmholtz", "--param", "a1=0", "--param", "a2=0"], "helmholtz with a1=0.0, a2=0.0, k=1.0: the exact solution"),
    (["helmholtz", "--param", "a2=0"], "the exact solution has norm 0"),
    (["helmholtz", "--param", "a1=1e300"], "the forcing q is not finite on the test grid"),
    (["poisson1d", "--param", "C=1e200"], "the forcing C^2 sin(C x) is not finite"),
    (["klein-gordon", "--param", "k=-1"], "klein-gordon k must be >= 0, got -1"),
    (["klein-gordon", "--param", "k=5000"], "the forcing f is not finite"),
    (["cavity", "--param", "Re=-100"], "cavity Re must be a finite number > 0, got -100.0"),  # D9
    (["cavity", "--param", "Re=0"], "cavity Re must be a finite number > 0"),
    (["cavity", "--param", "reference_n=0"], "cavity reference_n (grid cells per side) must be an integer in [8, 1024], got 0"),
    (["cavity", "--param", "reference_n=8", "--param", "Re=1000"], "under-resolved"),
])
def test_a_degenerate_problem_is_one_line_and_leaves_nothing(args, message, capsys, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # D6 printed numpy's RuntimeWarnings
        assert main(["run", *args, "--out", str(tmp_path)]) == EXIT_USAGE
    assert message in _error_line(capsys)
    assert _nothing_in(tmp_path)


def test_a_reference_that_fails_is_refused_before_the_record(monkeypatch, capsys, tmp_path):
    def unsolved(self, x):
        raise cli.UsageError("cavity reference at Re=100 on n=16 did not converge")

    monkeypatch.setattr(Cavity, "reference", unsolved)
    assert main(["run", "cavity", "--param", "reference_n=16", *TINY, "--out", str(tmp_path)]) == EXIT_USAGE
    assert "did not converge" in _error_line(capsys)
    assert _nothing_in(tmp_path)


@pytest.mark.parametrize("args", [
    ["helmholtz", "--width", "100000", "--depth", "50"],
    ["helmholtz", "--iterations", str(MAX_STEPS + 1)],
    ["helmholtz", "--param", "a1=0"],
    ["cavity", "--param", "Re=-100"],
    ["cavity", "--form", "psi"],
    ["helmholtz", "--device", "tpu"],
    ["helmholtz", "--method", "M1", "--gate", "paper"],
    ["helmholtz", "--method", "M3", "--weighting", "paper"],
    ["nope"],
    ["helmholtz", "--backend", "nope"],
    ["helmholtz", "--seed", "-1"],
])
def test_no_usage_error_of_run_leaves_a_run_directory(args, capsys, tmp_path):
    assert main(["run", *TINY, *args, "--out", str(tmp_path / "runs")]) == EXIT_USAGE  # later options win
    _error_line(capsys)
    assert _nothing_in(tmp_path / "runs")


# -- D8: messages name the option of the command used ---------------------------------------------

def test_an_unwritable_out_names_run_s_option(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "poisson1d", *TINY, "--out", str(blocker / "runs")]) == EXIT_USAGE
    err = _error_line(capsys)
    assert "is not writable" in err and "choose another with --out DIR" in err and "--store" not in err
    assert main(["campaign", "smoke", "--dry-run", "--store", str(blocker / "store")]) == 0  # reads only
    assert main(["campaign", "smoke", "--store", str(blocker / "store")]) == EXIT_USAGE
    assert "choose another with --store DIR" in _error_line(capsys)


# -- D11: SIGTERM as Ctrl-C ----------------------------------------------------------------------

def _wait_for(path: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "gradpath.suite", "run", "poisson1d", "--iterations", "1000000",
                             "--log-every", "10", "--width", "4", "--depth", "1", "--checkpoint-every", "0.01",
                             "--out", str(tmp_path)], cwd=ROOT, env=_environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        (run,) = _wait_for_run(tmp_path)
        _wait_for(run / CHECKPOINT)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "gradpath: interrupted; what was logged and its last checkpoint is kept in" in err
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["status"] == "interrupted" and summary["steps"] > 0  # D11: it stayed 'running'
    assert (run / CHECKPOINT).exists()


def _wait_for_run(out: Path, seconds: float = 120) -> list[Path]:
    deadline = time.monotonic() + seconds
    while True:
        runs = [p for p in out.glob("*") if not p.name.startswith(".")] if out.exists() else []
        if runs:
            return runs
        assert time.monotonic() < deadline, "no run directory appeared"
        time.sleep(0.2)


def test_sigterm_stops_a_campaign_worker_as_ctrl_c_does(tmp_path):
    (spec,) = expand(parse_campaign({"grid": {"problem": ["poisson1d"]},
                                     "settings": {"steps": 1_000_000, "log_every": 10, "width": 4, "depth": 1}},
                                    "test"))
    store = Store(tmp_path / "store")
    message = json.dumps({"specs": [json.loads(spec.to_json())], "store": str(store.root), "argv": ["campaign"]})
    proc = subprocess.Popen([sys.executable, "-m", "gradpath.suite.runs.job"], cwd=ROOT, env=_environment(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(message)
        proc.stdin.close()
        history = store.path(spec) / HISTORY
        _wait_for(history)
        while history.read_text().count("\n") < 2:  # a row beyond the header: training is under way
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    (outcome,) = json.loads(out.strip().splitlines()[-1])
    assert outcome["status"] == "interrupted"
    summary = json.loads((store.path(spec) / SUMMARY).read_text())
    assert summary["status"] == "interrupted" and summary["steps"] > 0


def test_sigterm_to_a_campaign_reaches_its_workers(tmp_path):
    source = tmp_path / "long.toml"
    source.write_text('[grid]\nproblem = ["poisson1d"]\n[settings]\nsteps = 1000000\nlog_every = 10\nwidth = 4\ndepth = 1\n')
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "gradpath.suite", "campaign", str(source), "--jobs", "1", "--store", str(store)],
                            cwd=ROOT, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        (run,) = _wait_for_run(store)
        _wait_for(run / HISTORY)
        proc.send_signal(signal.SIGTERM)  # the campaign process only, as `kill PID` does
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED and "gradpath: interrupted" in err, err
    assert json.loads((run / SUMMARY).read_text())["status"] == "interrupted"  # not left 'running'


# -- D12 and the output of reproduce/report --------------------------------------------------------

def test_the_usage_line_names_every_command(capsys):
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert set(commands.choices) >= {"list", "run", "campaign", "reproduce", "report", "restore", "reference"}
    for name in commands.choices:
        assert name in usage, f"{name} missing from: {usage}"


def test_reproduce_and_report_write_outside_the_tracked_results(monkeypatch, capsys, tmp_path):
    import gradpath.suite.report.build

    written = []

    def build_report(campaign, specs, store, out):  # where the tables and REPORT.md would go
        written.append(out)
        return [Path(out) / "REPORT.md"]

    monkeypatch.setattr(gradpath.suite.report.build, "build_report", build_report)
    monkeypatch.chdir(tmp_path)  # the default results directory is created here, not in the checkout
    campaign, specs = cli._plan("smoke")
    store = Store(tmp_path / "store")
    monkeypatch.setattr(cli, "_run", lambda args, argv: (campaign, specs, store, CampaignResult(0, 0)))
    for command in ("reproduce", "report"):
        assert main([command, "--preset", "smoke", "--store", str(store.root)]) == 0
        assert main([command, "--preset", "smoke", "--store", str(store.root), "--out", "results/smoke"]) == 0
    assert written == ["gradpath-results/smoke", "results/smoke"] * 2  # results/ only when asked for
    assert "gradpath-results/smoke" in capsys.readouterr().out


# -- the progress bar's ETA ------------------------------------------------------------------------

def test_the_eta_leaves_out_the_compile():
    clock = [0.0]
    progress = Progress(1000, "rel_l2", file=io.StringIO())
    progress.bar._time = lambda: clock[0]  # tqdm's clock, so that no test waits
    progress.bar.start_t = progress.bar.last_print_t = 0.0
    row = {"step": 100, "loss_residual": 1.0, "rel_l2": 0.5}
    clock[0] = 300.0  # five minutes of compile before the first row
    progress.update(row)
    clock[0] = 301.0  # then 100 steps a second
    progress.update({**row, "step": 200})
    info = progress.bar.format_dict
    assert info["n"] == 200 and info["rate"] == pytest.approx(100.0)
    assert (info["total"] - info["n"]) / info["rate"] == pytest.approx(8.0)  # not ~1500 s
    progress.close()


def test_an_unwritable_results_directory_is_a_usage_error_naming_out(tmp_path, capsys):
    from gradpath.suite.cli.commands import main

    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    for out in (str(a_file), str(a_file / "below")):
        assert main(["report", "--preset", "smoke", "--store", str(tmp_path), "--out", out]) == 2
        assert "--out DIR" in capsys.readouterr().err
    # reproduce checks it before training anything: no store is created
    assert main(["reproduce", "--preset", "smoke", "--store", str(tmp_path / "store"), "--out", str(a_file)]) == 2
    assert not (tmp_path / "store").exists()
