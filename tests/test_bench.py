"""``gradpath bench``: input errors, the report's arithmetic, and one tiny end-to-end run (no timing asserted)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from gradpath.problems.errors import UsageError
from gradpath.suite.perf import bench, timing
from gradpath.suite.perf import report as bench_report
from gradpath.suite.cli.commands import main


def _row(backend: str, method: str, ms: float, problem: str = "helmholtz") -> dict:
    return {"problem": problem, "backend": backend, "method": method, "device": "cpu", "ms_per_step": ms,
            "iqr_ms": 0.1, "chunks": 3, "compile_s": 1.0, "peak_rss_mib": 400.0, "rss_delta_mib": 50.0,
            "peak_device_mib": None, "error": 0.5, "device_name": "cpu", "versions": {}}


@pytest.mark.parametrize("argv, message", [
    (["--backend", "jx"], "unknown backend 'jx'; choose one of: jax, torch"),
    (["--method", "M1,M5"], "unknown method 'M5'; choose one of: M1, M2, M3, M4"),
    (["--problem", "helmhotz"], "unknown problem 'helmhotz'; choose one of: .*helmholtz"),
    (["--device", "gpu"], "unknown device 'gpu'; choose one of: auto, cpu, cuda"),
])
def test_bad_input_names_the_valid_choices(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradpath: error: ") and err.count("\n") == 1
    with pytest.raises(UsageError, match=message):
        bench._choices([argv[1]], [], {"--backend": ["jax", "torch"], "--method": ["M1", "M2", "M3", "M4"],
                                       "--problem": ["helmholtz", "poisson1d"],
                                       "--device": ["auto", "cpu", "cuda"]}[argv[0]], argv[0][2:])


def test_choices_accept_repeats_and_comma_lists():
    assert bench._choices(["M1,M2", "M4", "M2"], [], ["M1", "M2", "M3", "M4"], "method") == ["M1", "M2", "M4"]
    assert bench._choices(None, ["jax"], ["jax", "torch"], "backend") == ["jax"]


def test_ratios_and_targets():
    rows = [_row("jax", "M1", 0.8), _row("jax", "M2", 0.88), _row("jax", "M4", 1.6),
            _row("torch", "M1", 2.5), _row("torch", "M2", 3.0)]
    by = {(r["backend"], r["ratio"]): r for r in bench_report.ratios(rows)}
    assert math.isclose(by["jax", "M2/M1"]["value"], 1.1) and by["jax", "M2/M1"]["met"]
    assert math.isclose(by["jax", "M4/M1"]["value"], 2.0) and not by["jax", "M4/M1"]["met"]
    assert not by["torch", "M2/M1"]["met"] and ("torch", "M4/M1") not in by
    met = {t["backend"]: t["met"] for t in bench_report.targets(rows)}
    assert met == {"jax": True, "torch": False}


def test_quartiles():
    assert timing.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    assert timing.quartiles([2.0]) == (2.0, 2.0, 2.0)


def test_end_to_end_tiny_run(tmp_path, capsys):
    """One jax row of 20 steps in a fresh process: the table is printed and written three ways."""
    out = tmp_path / "perf"
    assert main(["bench", "--backend", "jax", "--method", "M1", "--steps", "20", "--log-every", "10",
                 "--device", "cpu", "--no-deepxde", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| helmholtz | jax | M1 | cpu |" in printed and "M1 target" in printed
    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert len(rows) == 1 and rows[0]["chunks"] == "2"
    # a jax process holds at least the interpreter, numpy and XLA's runtime: far over 50 MiB
    assert float(rows[0]["peak_rss_mib"]) > 50 and float(rows[0]["rss_delta_mib"]) >= 0
    assert 0 <= float(rows[0]["iqr_ms"]) and float(rows[0]["ms_per_step"]) > 0
    report = json.loads((out / "bench.json").read_text())
    assert report["machine"]["cpus"] and "jax" in report["versions"] and report["deepxde"] == []
    assert (out / "bench.md").read_text().startswith("# gradpath bench")


def test_deepxde_worker_measures_its_pytorch_backend():
    pytest.importorskip("deepxde")
    out = bench.run_in_subprocess("gradpath.suite.perf.deepxde", {"steps": 20, "chunk": 10}, env={"DDE_BACKEND": "pytorch"})
    assert out["backend"] == "pytorch" and out["chunks"] == 2 and out["ms_per_step"] > 0
    assert math.isfinite(out["final_train_loss"])


def test_timing_samples_each_chunk_and_can_repeat_the_same_work():
    """gradpath.suite.perf.timing, the one step timing: one sample per synchronised chunk; advance=False
    trains from the same state every time (what a per-chunk flop rate needs)."""
    pytest.importorskip("jax")
    prepared = timing.prepare("helmholtz", "M1", "jax", "cpu", chunk=5, pool=20)
    assert prepared.compile_seconds > 0 and prepared.settings.log_every == 5
    samples = timing.time_chunks(prepared, 3, 5)
    assert len(samples) == 3 and min(samples) > 0 and prepared.step == 15
    timing.time_chunks(prepared, 2, 5, advance=False)
    assert prepared.step == 15
    assert timing.ms_per_step_of_run([{"step": 10, "seconds": 0.5}, {"step": 20, "seconds": 1.5},
                                      {"step": 25, "seconds": 2.0}], 10) == [50.0, 100.0]

TINY_CAMPAIGN = """
name = "tiny"
[settings]
steps = 20
[[grid]]
problem = ["helmholtz"]
seed = [0, 1]
method = ["M1", "M2"]
loss_weights = [{}, {boundary = 10.0}]
"""


def test_campaign_cost_times_one_seed_of_each_configuration(tmp_path, capsys):
    """`gradpath bench --campaign`: four configurations (two seeds each) become four timed rows, each
    with its runs-table configuration; the report of ratios is written beside them."""
    source = tmp_path / "tiny.toml"
    source.write_text(TINY_CAMPAIGN)
    out = tmp_path / "cost"
    assert main(["bench", "--campaign", str(source), "--rounds", "1", "--log-every", "5", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert "timed 4 configurations" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "campaign-cost.csv").open()))
    assert len(rows) == 4 and {r["seed"] for r in rows} == {"0"}
    assert {(r["method"], r["loss_weights"]) for r in rows} == {("M1", ""), ("M2", ""), ("M1", '{"boundary": 10.0}'),
                                                                ("M2", '{"boundary": 10.0}')}
    assert all(float(r["ms_per_step"]) > 0 and r["chunks"] == "2" for r in rows)
    text = (out / "campaign-cost.md").read_text()
    assert text.startswith("# Campaign tiny") and "| helmholtz | M1 |" in text and "1.00x" in text


@pytest.mark.parametrize("argv, message", [
    (["--backend", "torch"], "unknown backend of campaign tiny 'torch'; choose one of: jax"),
    (["--method", "M3"], "unknown method of campaign tiny 'M3'; choose one of: M1, M2"),
    (["--repeats", "2"], "drop --time-to-first-result, --deepxde, --repeats and --steps"),
])
def test_campaign_cost_refuses_what_it_cannot_time(tmp_path, argv, message, capsys):
    source = tmp_path / "tiny.toml"
    source.write_text(TINY_CAMPAIGN)
    assert main(["bench", "--campaign", str(source), *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert main(["bench", "--lanes", "2"]) == 2
    assert "--lanes goes with --campaign" in capsys.readouterr().err
