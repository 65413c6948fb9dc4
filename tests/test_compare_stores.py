"""gradpath.suite.analysis.compare_stores (`gradpath analyse compare-stores`): the same run keys in two stores, paired and compared."""

from __future__ import annotations

import numpy as np
import pytest

from gradpath.suite.analysis.compare_stores import cell_comparison, paired_runs, report
from gradpath.suite.campaigns.definition import expand, parse_campaign
from gradpath.suite.runs.record import RunRecord
from gradpath.suite.runs.store import Store


def _store(root, errors: dict[int, float], device: str | None, ms: float, status: dict[int, str] | None = None,
           **grid) -> Store:
    """Helmholtz records of the given seeds (and any other grid axes) with the given errors, without training."""
    store = Store(root)
    data = {"grid": {"problem": ["helmholtz"], "seed": sorted(errors), **grid}, "settings": {"steps": 20, "log_every": 10}}
    for spec in expand(parse_campaign(data, "test")):
        seed = spec.config["settings"]["seed"]
        record = RunRecord.create(store.root, spec.config, {"command": ["test"]}, force=True)
        record.history.append({"step": 10, "seconds": 0.1, "loss_residual": 1.0, "rel_l2": errors[seed]})
        summary = {"steps": 10, "error": errors[seed], "metric": "rel_l2", "diverged": False, "ms_per_step": ms}
        record.finish((status or {}).get(seed, "complete"),
                      {**summary, "device_name": device} if device else summary, {"W0": np.ones((2, 2))})
    return store


def test_pairs_runs_by_key_and_compares_cells(tmp_path):
    _store(tmp_path / "a", {0: 0.10, 1: 0.20, 2: 0.30}, "AMD EPYC", 5.0)
    _store(tmp_path / "b", {0: 0.11, 1: 0.20, 2: 0.30, 3: 0.9}, "NVIDIA H200", 0.5, status={2: "failed"})
    paired, differ = paired_runs(tmp_path / "a", tmp_path / "b")
    assert list(paired["seed"]) == [0, 1] and differ.empty  # seed 2 failed in b (not done), seed 3 only in b
    assert paired["error_b"].tolist() == pytest.approx([0.11, 0.20])
    cell = cell_comparison(paired).iloc[0]
    assert cell["n"] == 2 and cell["ratio"] == pytest.approx(0.31 / 0.30)
    assert cell["seed_ratio_min"] == pytest.approx(1.0) and cell["seed_ratio_max"] == pytest.approx(1.1)
    assert (cell["ms_a"], cell["ms_b"]) == (5.0, 0.5)
    text = report(paired, differ, cell_comparison(paired), "cpu", "h200")
    assert "Devices: cpu = AMD EPYC; h200 = NVIDIA H200." in text
    assert "| helmholtz 50x3 | M1 | jax | 2 | 1.500e-01 | 1.550e-01 | 1.033 |" in text
    assert "| helmholtz 50x3 M1 jax | 1 | 2.0000e-01 | 2.0000e-01 |" in text


def test_runs_that_ended_differently_are_named_not_dropped(tmp_path):
    _store(tmp_path / "a", {0: 0.1, 1: 0.2}, "cpu", 1.0)
    _store(tmp_path / "b", {0: 0.1, 1: 0.2}, None, 1.0, status={1: "diverged"})
    paired, differ = paired_runs(tmp_path / "a", tmp_path / "b")
    assert list(paired["seed"]) == [0] and list(differ["seed"]) == [1]
    text = report(paired, differ, cell_comparison(paired), "a", "b")
    assert "**1 run ended differently:**" in text and "(a: complete, b: diverged)" in text
    assert "b = unknown" in text  # a record without a device name


def test_cells_that_differ_in_a_setting_are_not_pooled(tmp_path):
    grid = {"weighting": ["code", "code-global"], "method": ["M2"]}
    _store(tmp_path / "a", {0: 0.1, 1: 0.2}, "cpu", 1.0, **grid)
    _store(tmp_path / "b", {0: 0.1, 1: 0.2}, "gpu", 1.0, **grid)
    paired, differ = paired_runs(tmp_path / "a", tmp_path / "b")
    cells = cell_comparison(paired)
    assert len(cells) == 2 and set(cells["n"]) == {2}
    assert {"helmholtz 50x3 (weighting=code)", "helmholtz 50x3 (weighting=code-global)"} == set(cells["label"])
    assert set(cells["paired_p"]) == {1.0}  # the same errors: nothing to tell apart
    text = report(paired, differ, cells, "a", "b")  # each run is listed under its own cell's label
    for weighting in ("code", "code-global"):
        assert f"| helmholtz 50x3 (weighting={weighting}) M2 jax | 1 | 2.0000e-01 | 2.0000e-01 |" in text


def test_stores_with_no_common_run_say_so(tmp_path):
    _store(tmp_path / "a", {0: 0.1}, "x", 1.0)
    _store(tmp_path / "b", {1: 0.1}, "y", 1.0)
    with pytest.raises(SystemExit, match="no done run with the same key"):
        paired_runs(tmp_path / "a", tmp_path / "b")


def test_gradpath_analyse_compare_stores_prints_and_writes(tmp_path, capsys):
    """The command the docs name: ``gradpath analyse compare-stores STORE_A STORE_B``."""
    from gradpath.suite.cli.commands import main

    _store(tmp_path / "a", {0: 0.10, 1: 0.20}, "AMD EPYC", 5.0)
    _store(tmp_path / "b", {0: 0.11, 1: 0.20}, "NVIDIA H200", 0.5)
    out = tmp_path / "check.md"
    assert main(["analyse", "compare-stores", str(tmp_path / "a"), str(tmp_path / "b"), "--label-a", "cpu",
                 "--label-b", "h200", "--out", str(out)]) == 0
    assert "Devices: cpu = AMD EPYC; h200 = NVIDIA H200." in capsys.readouterr().out
    assert out.read_text().startswith("# The same runs on two machines: cpu and h200")


def test_gradpath_analyse_names_its_analyses(capsys):
    from gradpath.suite.cli.commands import main

    assert main(["analyse", "compare-store"]) == 2
    assert "compare-stores" in capsys.readouterr().err
