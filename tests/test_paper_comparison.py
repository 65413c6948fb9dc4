"""REPORT.md's "Beside the paper" section, from hand-made cells whose answers are known."""

from __future__ import annotations

import math

import pandas as pd

from suite.paper_comparison import backend_lines, comparison_section, cost_lines, factor_lines, headline_lines


def _cells() -> pd.DataFrame:
    rows = []
    # jax: M1 0.2 (paper 0.1: ratio 2.0, inside), M4 0.004 (paper 0.004); torch: M1 0.3 (ratio 3, outside)
    for backend, m1, m4 in (("jax", 0.2, 0.004), ("torch", 0.3, 0.006)):
        for method, mean, paper in (("M1", m1, 0.1), ("M4", m4, 0.004)):
            rows.append({"problem": "helmholtz", "backend": backend, "method": method, "width": 50, "depth": 3,
                         "n": 10, "mean": mean, "paper": paper, "ratio": mean / paper,
                         "improvement": m1 / mean, "paper_improvement": 0.1 / paper})
    rows.append({"problem": "cavity", "backend": "jax", "method": "M1", "width": 50, "depth": 3, "param_form": "psi-p",
                 "n": 0, "mean": math.nan, "paper": 0.271, "ratio": math.nan, "improvement": math.nan,
                 "paper_improvement": 1.0})
    return pd.DataFrame(rows)


def test_headline_gives_m4_over_m1_beside_the_papers():
    text = "".join(headline_lines(_cells()))
    assert "| helmholtz 50x3 | jax | 2.00e-01 | 4.00e-03 | 50.0x | 25.0x | 10, 10 |" in text
    assert "| helmholtz 50x3 | torch | 3.00e-01 | 6.00e-03 | 50.0x | 25.0x | 10, 10 |" in text
    assert "cavity" not in text  # no result yet: no row


def test_factor_two_counts_measured_cells_only_and_lists_the_misses():
    text = "".join(factor_lines(_cells()))
    assert text.startswith("3 of 4 measured cells")  # the empty cavity cell is not counted
    assert "1 are worse, 0 better" in text
    assert "| helmholtz 50x3 | torch | M1 | 10 | 3.00e-01 | 1.00e-01 | 3.00 |" in text


def test_backends_side_by_side_with_their_ratio():
    text = "".join(backend_lines(_cells()))
    assert "| helmholtz 50x3 | M1 | 2.00e-01 (10) | 3.00e-01 (10) | 1.5000 | - |" in text
    # given the runs: the largest per-seed relative difference, over the seeds run in both backends
    runs = pd.DataFrame({"problem": "helmholtz", "width": 50, "depth": 3, "method": "M1", "status": "complete",
                         "backend": ["jax", "jax", "torch", "torch", "torch"], "seed": [0, 1, 0, 1, 2],
                         "error": [0.2, 0.1, 0.21, 0.1, 0.5]})
    text = "".join(backend_lines(_cells(), runs))
    assert "| helmholtz 50x3 | M1 | 2.00e-01 (10) | 3.00e-01 (10) | 1.5000 | 5% |" in text  # seed 2: jax has none
    one = _cells()[lambda c: c["backend"] == "jax"]
    assert backend_lines(one) == ["Only jax has results so far.\n"]


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
    assert comparison_section(pd.DataFrame(), pd.DataFrame()) == ""


def test_cells_that_differ_in_a_setting_get_labels_of_their_own():
    cells = _cells()[lambda c: c["backend"] == "jax"].copy()
    cells["weighting"], cells["anneal_alpha"] = "code", math.nan
    variant = cells[cells["method"] == "M4"].assign(anneal_alpha=0.9, mean=0.002)
    text = "".join(headline_lines(pd.concat([cells, variant], ignore_index=True)))
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
