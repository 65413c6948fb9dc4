"""REPORT.md's "Beside the paper" section, from hand-made runs whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradpath.suite.analysis.method_comparison import method_comparisons
from gradpath.suite.analysis.paper_comparison import (backend_lines, comparison_section, consistency_lines, cost_lines, factor_lines,
                                    headline_lines, measured_cells)
from gradpath.suite.analysis.tables import cell_stats, errors_by_cell

SPREAD = np.array([1.01, 1.1, 0.9, 1.05, 0.95, 1.03, 0.97, 1.08, 0.92, 0.99])  # ten seeds, mean 1, no ties


def _runs(backend: str, method: str, scale: float, seeds: int = 10, **extra) -> list[dict]:
    return [{"problem": "helmholtz", "backend": backend, "method": method, "width": 50, "depth": 3, "seed": s,
             "status": "complete", "error": float(scale * SPREAD[s]), "param_a1": 1.0, "param_a2": 4.0,
             "param_k": 1.0, **extra} for s in range(seeds)]


def _table() -> pd.DataFrame:
    # Table 2 row 50 x 3 (paper: M1 0.106, M4 3.87e-3). jax: M1 near 0.106 (consistent), M4 at 1.8x (higher);
    # torch: M1 at 3x (higher), M4 near the paper's
    rows = (_runs("jax", "M1", 0.106) + _runs("jax", "M4", 1.8 * 3.87e-3)
            + _runs("torch", "M1", 3 * 0.106) + _runs("torch", "M4", 3.87e-3))
    return pd.DataFrame(rows)


def _cells(runs: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    runs = _table() if runs is None else runs
    return cell_stats(runs), errors_by_cell(runs)


def test_headline_gives_m4_over_m1_beside_the_papers_with_an_interval():
    cells, errors = _cells()
    text = "".join(headline_lines(cells, errors))
    # ratio of means 0.106 / 6.966e-3 = 15.2x; of geometric means the same (same spread); paper 27.4x
    assert "| helmholtz 50x3 | jax | 1.06e-01 | 6.97e-03 | 15.2x | 27.4x | 15.2x [" in text
    # ten seeds against ten, completely separated: exact Mann-Whitney p = 2 / C(20, 10)
    assert f"| {2 / 184756:.1e} | 10, 10 |" in text


def test_consistency_counts_per_backend_and_lists_the_inconsistent_cells():
    cells, _ = _cells()
    verdicts = cells.set_index(["backend", "method"])["paper_verdict"]
    assert verdicts[("jax", "M1")] == "consistent" and verdicts[("torch", "M4")] == "consistent"
    assert verdicts[("jax", "M4")] == "ours higher" and verdicts[("torch", "M1")] == "ours higher"
    text = "".join(consistency_lines(cells))
    assert "| jax | 2 | 1 | 1 | 0 |" in text and "| torch | 2 | 1 | 1 | 0 |" in text
    assert "| helmholtz 50x3 | torch | M1 | 10 | 3.18e-01 | 1.06e-01 | 3.00 (ours higher) |" in text
    # M1: jax consistent, torch higher; M4 the other way round. Agreement, never a second reproduction
    assert "reach the same verdict on 0 of 2 cells" in text
    few = cell_stats(pd.DataFrame(_runs("torch", "M1", 0.106, seeds=3)))
    assert "Not tested (too few seeds): 1 torch cells." in "".join(consistency_lines(few))


def test_factor_two_counts_measured_cells_only_and_lists_the_misses():
    cells, _ = _cells()
    text = "".join(factor_lines(cells))
    assert text.startswith("3 of 4 measured cells") and "jax: 2 of 2, torch: 1 of 2" in text  # 1.8x is inside
    assert "1 are worse, 0 better" in text
    assert "| helmholtz 50x3 | torch | M1 | 10 | 3.18e-01 | 1.06e-01 | 3.00 | ours higher |" in text


def test_method_comparisons_pair_by_seed_whatever_the_row_order():
    runs = pd.DataFrame(_runs("jax", "M1", 0.1) + _runs("jax", "M2", 0.01) + _runs("jax", "M3", 0.02)
                        + _runs("jax", "M4", 0.005))
    runs.loc[runs["method"] == "M2", "error"] *= np.linspace(0.9, 1.1, 10)  # paired differences that vary
    expected = None
    for order in (None, 3, 11):
        shuffled = runs if order is None else runs.sample(frac=1, random_state=order)
        cells, errors = _cells(shuffled)
        table = method_comparisons(measured_cells(cells), errors).set_index("comparison")
        assert list(table.index) == ["M2 vs M1", "M4 vs M3", "M4 vs M1"]
        assert table.loc["M2 vs M1", "paired"] and table.loc["M4 vs M3", "paired"]
        assert not table.loc["M4 vs M1", "paired"]  # different networks
        assert table.loc["M4 vs M3", "ratio"] == pytest.approx(0.25)  # every seed 4x lower: paired exactly
        assert table.loc["M2 vs M1", "p_value"] == pytest.approx(2 / 2 ** 10)  # ten wins: exact Wilcoxon
        assert table.loc["M2 vs M1", "p_improvement"] == 1.0
        assert (table["q_value"] >= table["p_value"]).all()
        numbers = table[["ratio", "ratio_low", "ratio_high", "p_value", "q_value"]].to_numpy()
        expected = numbers if expected is None else expected
        assert numbers == pytest.approx(expected)  # the same pairs, the same (seeded) bootstrap


def test_backends_side_by_side_with_their_ratio():
    cells, _ = _cells()
    runs = _table()
    text = "".join(backend_lines(cells, runs))
    assert "| helmholtz 50x3 | M1 | 1.06e-01 (10) | 3.18e-01 (10) | 3.0000 | 2e+02% |" in text
    one = cells[cells["backend"] == "jax"]
    assert backend_lines(one) == ["Only jax has results so far.\n"]


def test_backends_side_by_side_ignore_the_compile_setting():
    # D10: a jax cell compiled and a torch cell run eagerly are one configuration in two backends
    runs = pd.DataFrame(_runs("jax", "M1", 0.1, compile=True) + _runs("torch", "M1", 0.1, compile=False))
    cells, _ = _cells(runs)
    text = "".join(backend_lines(cells, runs))
    assert "No cell has results in two backends" not in text
    assert "| helmholtz 50x3 | M1 | 1.00e-01 (10) | 1.00e-01 (10) | 1.0000 | 0% |" in text
    # but two cells of one backend told apart by compile alone keep it in their labels
    both = pd.DataFrame(_runs("torch", "M1", 0.1, compile=True) + _runs("torch", "M1", 0.2, compile=False))
    labels = set(measured_cells(cell_stats(both))["label"])
    assert labels == {"helmholtz 50x3 (compile=True)", "helmholtz 50x3 (compile=False)"}


def test_cost_counts_a_vectorised_job_once():
    runs = pd.DataFrame({"status": ["complete", "complete", "failed"],
                         "started": ["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00", "2026-01-01T05:00:00+00:00"],
                         "wall_seconds": [3600.0, 3600.0, 10.0], "train_seconds": [3000.0, 3000.0, 1.0],
                         "vectorised_seeds": [2, 2, 1], "hostname": ["a", "a", "b"], "device_name": ["cpu"] * 3,
                         "git_commit": ["abc"] * 3})
    text = "".join(cost_lines(runs))
    assert "2 runs finished" in text and "(1.0 h of wall clock" in text
    assert "0.8 h of training steps" in text  # 3000 s once, not twice
    assert "Machines: a;" in text  # the failed run's host is not a finished run's


def test_cost_spans_a_resumed_run_from_its_first_process_to_its_finish():
    # run 2 went on from a checkpoint: its last process started at 03:00, its first at 00:00, and
    # its wall_seconds add up both processes, so start + wall would overshoot its finish
    runs = pd.DataFrame({"status": ["complete", "complete"],
                         "started": ["2026-01-01T01:00:00+00:00", "2026-01-01T03:00:00+00:00"],
                         "first_started": [None, "2026-01-01T00:00:00+00:00"],
                         "finished": [None, "2026-01-01T04:00:00+00:00"],
                         "wall_seconds": [3600.0, 7200.0], "train_seconds": [3000.0, 6000.0],
                         "vectorised_seeds": [1, 1]})
    assert "between 2026-01-01 00:00 and 2026-01-01 04:00 UTC (4.0 h of wall clock" in "".join(cost_lines(runs))


def test_the_section_is_empty_without_cells():
    assert comparison_section(pd.DataFrame(), pd.DataFrame(), {}) == ""


def test_cells_that_differ_in_a_setting_get_labels_of_their_own():
    runs = pd.DataFrame(_runs("jax", "M1", 0.2, weighting="code") + _runs("jax", "M4", 0.004, weighting="code")
                        + _runs("jax", "M4", 0.002, weighting="code", anneal_alpha=0.9))
    cells, errors = _cells(runs)
    text = "".join(headline_lines(cells, errors))
    assert "| helmholtz 50x3 (anneal_alpha=default) | jax | 2.00e-01 | 4.00e-03 | 50.0x |" in text
    assert "(anneal_alpha=0.9)" not in text  # no M1 in that configuration: no factor, and never averaged in


def test_cost_gives_each_device_its_own_line_when_runs_ran_on_two():
    runs = pd.DataFrame({"status": ["complete"] * 3,
                         "started": ["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00",
                                     "2026-01-01T10:00:00+00:00"],
                         "wall_seconds": [7200.0, 7200.0, 600.0], "train_seconds": [7000.0, 7000.0, 540.0],
                         "vectorised_seeds": [2, 2, 1], "device_name": ["AMD EPYC", "AMD EPYC", "NVIDIA H200"]})
    text = "".join(cost_lines(runs))
    assert "3 runs finished between 2026-01-01 00:00 and 2026-01-01 10:10 UTC (10.2 h of wall clock" in text
    assert "  - AMD EPYC: 2 runs between 2026-01-01 00:00 and 2026-01-01 02:00 UTC (2.0 h of wall clock); 1.9 h" in text
    assert "  - NVIDIA H200: 1 run between 2026-01-01 10:00 and 2026-01-01 10:10 UTC (0.2 h of wall clock); 0.1 h" in text


def test_cost_has_no_device_lines_for_one_device():
    runs = pd.DataFrame({"status": ["complete"], "started": ["2026-01-01T00:00:00+00:00"], "wall_seconds": [60.0],
                         "train_seconds": [50.0], "device_name": ["AMD EPYC"]})
    assert "  - AMD EPYC" not in "".join(cost_lines(runs))


def test_cost_counts_runs_without_a_device_name_on_a_line_of_their_own():
    runs = pd.DataFrame({"status": ["complete"] * 2, "started": ["2026-01-01T00:00:00+00:00"] * 2,
                         "wall_seconds": [60.0, 60.0], "train_seconds": [50.0, 50.0],
                         "device_name": ["AMD EPYC", None]})
    text = "".join(cost_lines(runs))
    assert "devices: AMD EPYC." in text and "  - unknown: 1 run between" in text
