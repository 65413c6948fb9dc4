"""suite.escape: when each run leaves the trivial solution, and the report section built on it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from suite.escape import escape_cells, escape_section, escape_steps


def _runs_and_history(errors_by_seed: dict[int, list[float]], problem: str = "helmholtz", key: str = "k",
                      **config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs whose logged primary error (every 10,000 steps) is the given list; the metric column is the problem's."""
    metric = "rel_spectral" if problem == "cavity" else "rel_l2"
    config = {"backend": "jax", "method": "M2", "width": 50, "depth": 3, **config}
    runs = pd.DataFrame({"key": [f"{key}{s}" for s in errors_by_seed], "problem": problem, **config,
                         "seed": list(errors_by_seed), "status": "complete",
                         "error": [e[-1] if e else 0.01 for e in errors_by_seed.values()]})
    history = pd.DataFrame([{"key": f"{key}{s}", "step": 10_000 * (i + 1), metric: e}
                            for s, errors in errors_by_seed.items() for i, e in enumerate(errors)])
    return runs, history


def test_the_escape_step_is_the_first_logged_step_below_the_threshold():
    runs, history = _runs_and_history({0: [0.9, 0.4, 0.6, 0.01], 1: [1.0, 1.0, 1.0, 0.9]})
    steps = escape_steps(runs, history)
    assert steps.iloc[0] == 20_000  # later rows above 0.5 do not matter
    assert np.isinf(steps.iloc[1])  # logged, never below 0.5


def test_no_logged_error_or_no_trivial_phase_gives_nothing_to_say():
    runs, history = _runs_and_history({0: [0.9, 0.1], 1: [0.3, 0.1], 2: []})
    steps = escape_steps(runs, history)
    assert steps.iloc[0] == 20_000
    assert np.isnan(steps.iloc[1])  # below 0.5 from its first logged row: no trivial phase
    assert np.isnan(steps.iloc[2])  # no history rows at all: not "never"
    assert np.isnan(escape_steps(runs, history.drop(columns="rel_l2")).iloc[0])
    assert np.isnan(escape_steps(runs, pd.DataFrame()).iloc[0])
    # a column that other runs logged but this one left empty (the long history is their union)
    mixed = pd.concat([history, pd.DataFrame({"key": ["k0"], "step": [5_000], "rel_l2": [np.nan]})])
    assert escape_steps(runs, mixed).iloc[0] == 20_000


def test_a_cell_names_its_latest_seed_and_counts_late_and_never():
    runs, history = _runs_and_history({0: [0.9, 0.01], 1: [0.9, 0.9, 0.3], 2: [0.9, 0.02], 3: [1.0, 1.0, 1.0, 1.0]})
    cell = escape_cells(runs, history).iloc[0]
    assert cell["n"] == 4 and cell["median_step"] == 20_000  # of the three that went below 0.5
    assert cell["latest_seed"] == 3 and np.isinf(cell["latest_step"])  # never is the latest
    assert cell["late"] == 2 and cell["never"] == 1  # seed 1 at 30,000, and seed 3
    text = escape_section(runs, history)
    assert "| helmholtz 50x3 | jax | M2 | 4 | 20,000 | never (seed 3: 1.00e+00) | 2 | 1 |" in text


def test_a_cell_where_every_run_stays_stuck_is_still_shown():
    runs, history = _runs_and_history({0: [1.0, 1.0], 1: [1.0, 1.0]})
    assert "| helmholtz 50x3 | jax | M2 | 2 | - | never (seed 0: 1.00e+00) | 2 | 2 |" in escape_section(runs, history)


def test_cells_apart_variants_labelled_and_the_cavity_left_out():
    base = _runs_and_history({0: [0.9, 0.1], 1: [0.9, 0.9, 0.1]}, weighting="code", key="a")
    variant = _runs_and_history({0: [0.9, 0.9, 0.9, 0.1]}, weighting="code-global", key="b")
    cavity = _runs_and_history({0: [0.4, 0.2]}, problem="cavity", key="c", width=np.nan, depth=np.nan,
                               param_form="psi-p")
    diverged = _runs_and_history({5: [0.9, 0.1]}, weighting="code", key="d")
    diverged[0]["status"] = "diverged"
    runs = pd.concat([base[0], variant[0], cavity[0], diverged[0]], ignore_index=True)
    history = pd.concat([base[1], variant[1], cavity[1], diverged[1]], ignore_index=True)
    cells = escape_cells(runs, history)
    assert sorted(cells["weighting"]) == ["code", "code-global"]  # no cavity cell; two Helmholtz cells
    assert cells.set_index("weighting").loc["code", "n"] == 2  # the diverged run is not counted
    text = escape_section(runs, history)
    assert "helmholtz 50x3 (weighting=code-global) | jax | M2 | 1 | 40,000 |" in text
    assert "cavity" not in text.split("\n\n", 2)[2]  # only in the explanation, not in the table


def test_a_cell_counts_only_its_runs_with_a_trivial_phase():
    runs, history = _runs_and_history({0: [0.9, 0.1], 1: [0.3, 0.2]})
    cell = escape_cells(runs, history).iloc[0]
    assert cell["n"] == 1 and cell["median_error"] == 0.1  # seed 1 started below 0.5: neither counted nor averaged
