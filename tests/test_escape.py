"""suite.escape: when each run leaves the trivial solution, and the report section built on it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from suite.escape import escape_cells, escape_section, escape_steps


def _runs_and_history(errors_by_seed: dict[int, list[float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Helmholtz 50 x 3 M2 runs whose logged rel_l2 (every 10,000 steps) is the given list."""
    runs = pd.DataFrame({"key": [f"k{s}" for s in errors_by_seed], "problem": "helmholtz", "backend": "jax",
                         "method": "M2", "width": 50, "depth": 3, "seed": list(errors_by_seed),
                         "status": "complete", "error": [e[-1] for e in errors_by_seed.values()]})
    history = pd.DataFrame([{"key": f"k{s}", "step": 10_000 * (i + 1), "rel_l2": e}
                            for s, errors in errors_by_seed.items() for i, e in enumerate(errors)])
    return runs, history


def test_the_escape_step_is_the_first_logged_step_below_the_threshold():
    runs, history = _runs_and_history({0: [0.9, 0.4, 0.6, 0.01], 1: [1.0, 1.0, 1.0, 0.9]})
    steps = escape_steps(runs, history)
    assert steps.iloc[0] == 20_000  # later rows above 0.5 do not matter
    assert np.isnan(steps.iloc[1])  # never below 0.5


def test_a_run_without_its_metric_in_the_history_has_no_escape_step():
    runs, history = _runs_and_history({0: [0.1]})
    assert np.isnan(escape_steps(runs, history.drop(columns="rel_l2")).iloc[0])
    assert np.isnan(escape_steps(runs, pd.DataFrame()).iloc[0])


def test_a_cell_names_its_latest_seed_and_counts_late_and_never():
    runs, history = _runs_and_history({0: [0.1, 0.01], 1: [0.9, 0.9, 0.3], 2: [0.2, 0.02], 3: [1.0, 1.0, 1.0, 1.0]})
    cell = escape_cells(runs, history).iloc[0]
    assert cell["n"] == 4 and cell["median_step"] == 10_000  # of the three that escaped
    assert cell["latest_seed"] == 3 and np.isnan(cell["latest_step"])  # a seed that never escaped is the latest
    assert cell["late"] == 1 and cell["never"] == 1  # seed 1 at 30,000 is late; seed 3 never escaped
    text = escape_section(runs, history)
    assert "| helmholtz 50x3 | jax | M2 | 4 | 10,000 | never (seed 3: 1.00e+00) | 1 | 1 |" in text


def test_runs_that_failed_are_left_out_and_no_history_means_no_section():
    runs, history = _runs_and_history({0: [0.1], 1: [0.9, 0.1]})
    runs.loc[1, "status"] = "failed"
    assert escape_cells(runs, history).iloc[0]["n"] == 1
    assert escape_section(runs, history.drop(columns="rel_l2")) == ""
