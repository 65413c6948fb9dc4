"""gradpath.suite.analysis.escape: the boundary-violating and trivial phases of each run, its escape step, and the report section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradpath.suite.analysis.escape import (MIN_JUDGED_STEPS, escape_section, escape_steps, phase_cells, phase_rows, run_phases)

PAPER = Path(__file__).resolve().parents[1] / "results" / "paper"
ABLATIONS = PAPER.parent / "ablations"
VIOLATING = (3.0, 30.0)  # (error, boundary loss): M1's state at its peak, error above u = 0's
TRIVIAL = (1.0, 1e-7)  # u = 0: error 1, boundary fitted
CONVERGED = (0.2, 0.05)


def _runs_and_history(rows_by_seed: dict[int, list], problem: str = "helmholtz", key: str = "k",
                      every: int = 10_000, steps: int | None = 40_001, **config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs whose logged rows (one every ``every`` steps, from step ``every``) are the given errors, or
    (error, boundary loss) pairs; the error column is the problem's primary metric."""
    metric = "rel_spectral" if problem == "cavity" else "rel_l2"
    config = {"backend": "jax", "method": "M2", "width": 50, "depth": 3, **config}
    pairs = {s: [r if isinstance(r, tuple) else (r, np.nan) for r in rows] for s, rows in rows_by_seed.items()}
    runs = pd.DataFrame({"key": [f"{key}{s}" for s in pairs], "problem": problem, **config, "seed": list(pairs),
                         "status": "complete", "error": [p[-1][0] if p else 0.01 for p in pairs.values()]})
    if steps is not None:
        runs["steps"] = steps
    history = pd.DataFrame([{"key": f"{key}{s}", "step": every * (i + 1), metric: e, "loss_boundary": b}
                            for s, rows in pairs.items() for i, (e, b) in enumerate(rows)],
                           columns=["key", "step", metric, "loss_boundary"])
    return runs, history


# --- rows -------------------------------------------------------------------------------------------------

def test_a_row_is_in_a_phase_by_its_error_and_boundary_loss():
    error = pd.Series([1.0, 0.99, 5.0, 1.049, 0.951, 1.051, 1.0, 1.0, 1.02])
    boundary = pd.Series([0.1, 30.0, 0.09, 1e-3, 1e-8, 1e-8, 2e-3, np.nan, 0.5])
    rows = phase_rows(error, boundary)
    # error >= 1 and boundary loss >= 0.1, both bounds included; below u = 0's error it is not violating
    assert rows["violating"].tolist() == [True, False, False, False, False, False, False, False, True]
    # within 0.05 of error 1 with a fitted boundary (<= 1e-3); a missing boundary loss is in neither phase
    assert rows["trivial"].tolist() == [False, False, False, True, True, False, False, False, False]
    assert not (rows["violating"] & rows["trivial"]).any()  # the two phases never overlap


# --- runs -------------------------------------------------------------------------------------------------

def test_a_run_leaves_a_phase_at_the_logged_step_after_its_last_row_in_it():
    runs, history = _runs_and_history({
        0: [(1.2, 0.5), VIOLATING, (1.5, 5.0), (0.8, 0.5), CONVERGED],  # M1-like: violating, then converging
        1: [(1.1, 0.3), TRIVIAL, TRIVIAL, TRIVIAL, (0.4, 0.1), CONVERGED],  # stuck at u = 0, then leaves
        2: [TRIVIAL] * 5,  # never leaves u = 0
        3: [VIOLATING, (0.9, 0.5), VIOLATING, (0.6, 0.3), CONVERGED],  # out and back in: the last row counts
        4: [(1.2, 0.5), (1.98, 0.23), (1.97, 0.22)],  # wrong solution to the end (30 x 3 code-global seed 5)
        5: [CONVERGED, CONVERGED],  # never in either phase
    }, every=100, steps=MIN_JUDGED_STEPS)
    phases = run_phases(runs, history)
    assert phases["violating_left"].tolist()[:2] == [400, 200]  # seed 1's first row is violating too
    assert phases.at[0, "violating_peak"] == 3.0
    assert phases.at[1, "trivial_left"] == 500 and np.isinf(phases.at[2, "trivial_left"])
    assert np.isnan(phases.at[2, "violating_left"]) and np.isnan(phases.at[0, "trivial_left"])  # never entered
    assert phases.at[3, "violating_left"] == 400
    assert np.isinf(phases.at[4, "violating_left"]) and phases.at[4, "violating_peak"] == 1.98
    assert phases.loc[5, ["violating_left", "trivial_left", "escape_step"]].isna().all()
    assert phases["escape_step"].tolist()[:5] == [500, 500, np.inf, 500, np.inf]
    assert phases["judged"].all()  # exactly MIN_JUDGED_STEPS long


def test_a_run_shorter_than_the_minimum_is_not_judged_and_its_length_is_its_own():
    runs, history = _runs_and_history({0: [VIOLATING, VIOLATING]}, every=100, steps=200)
    phases = run_phases(runs, history)
    assert phases.at[0, "length"] == 200 and not phases.at[0, "judged"]
    assert np.isinf(phases.at[0, "violating_left"])  # still measured: only its judgement is withheld
    # without a steps setting, the length is the run's last logged step
    unset = run_phases(runs.drop(columns="steps"), history)
    assert unset.at[0, "length"] == 200


def test_no_boundary_loss_or_no_history_gives_no_phase():
    runs, history = _runs_and_history({0: [VIOLATING, CONVERGED]})
    no_boundary = run_phases(runs, history.drop(columns="loss_boundary"))
    assert no_boundary.loc[0, ["violating_left", "trivial_left"]].isna().all()
    assert no_boundary.at[0, "escape_step"] == 20_000  # the escape step needs only the error
    empty = run_phases(runs, pd.DataFrame())
    assert empty.loc[0, ["violating_left", "escape_step", "length"]].isna().all() and not empty.at[0, "judged"]


def test_the_escape_step_is_the_first_logged_step_below_the_threshold():
    runs, history = _runs_and_history({0: [0.9, 0.4, 0.6, 0.01], 1: [1.0, 1.0, 1.0, 0.9]})
    steps = escape_steps(runs, history)
    assert steps.iloc[0] == 20_000  # later rows above 0.5 do not matter
    assert np.isinf(steps.iloc[1])  # logged, never below 0.5


def test_no_logged_error_or_no_phase_above_the_threshold_gives_nothing_to_say():
    runs, history = _runs_and_history({0: [0.9, 0.1], 1: [0.3, 0.1], 2: []})
    steps = escape_steps(runs, history)
    assert steps.iloc[0] == 20_000
    assert np.isnan(steps.iloc[1])  # below 0.5 from its first logged row
    assert np.isnan(steps.iloc[2])  # no history rows at all: not "never"
    assert np.isnan(escape_steps(runs, history.drop(columns="rel_l2")).iloc[0])
    assert np.isnan(escape_steps(runs, pd.DataFrame()).iloc[0])
    # a column that other runs logged but this one left empty (the long history is their union)
    mixed = pd.concat([history, pd.DataFrame({"key": ["k0"], "step": [5_000], "rel_l2": [np.nan]})])
    assert escape_steps(runs, mixed).iloc[0] == 20_000


# --- cells and the report section ------------------------------------------------------------------------

def test_a_cell_counts_each_phase_its_leaving_steps_and_the_runs_that_never_left():
    runs, history = _runs_and_history({
        0: [VIOLATING, (0.4, 0.2), CONVERGED],
        1: [VIOLATING, VIOLATING, VIOLATING, (0.3, 0.2)],
        2: [VIOLATING, (0.45, 0.3), CONVERGED],
        3: [(1.1, 0.3), TRIVIAL, TRIVIAL, TRIVIAL],  # stuck at u = 0 to the end
    })
    cell = phase_cells(runs, history).iloc[0]
    assert cell["n"] == 4 and cell["judged"]
    assert cell["violating_entered"] == 4 and cell["violating_never"] == 0
    assert (cell["violating_median"], cell["violating_first"], cell["violating_last"]) == (20_000, 20_000, 40_000)
    assert cell["trivial_entered"] == 1 and cell["trivial_never"] == 1 and np.isnan(cell["trivial_median"])
    assert cell["violating_peak"] == 3.0  # median of 3.0, 3.0, 3.0 and 1.1
    assert cell["n_escape"] == 4 and cell["median_step"] == 20_000  # of the three that went below 0.5
    assert cell["latest_seed"] == 3 and np.isinf(cell["latest_step"])
    assert cell["late"] == 2 and cell["never"] == 1  # seed 1 at 40,000 > half of 40,001, and seed 3
    text = escape_section(runs, history)
    assert ("| helmholtz 50x3 | jax | M2 | 4 | 4: 20,000 (20,000-40,000) | 3.00 | 1: never | 4, 20,000 "
            "| never (seed 3: 1.00e+00) | 2 | 1 |") in text


def test_late_is_relative_to_the_runs_own_length_and_short_runs_are_not_judged():
    # a 200-step smoke run that never goes below 0.5 is "too short to judge", not "after 20,000"
    smoke = _runs_and_history({0: [VIOLATING, VIOLATING]}, every=100, steps=200, width=20, depth=2, key="s")
    # a 12,000-step run that goes below 0.5 at 8,000 is late (after 6,000); at 40,001 steps it would not be
    short = _runs_and_history({0: [VIOLATING, (0.9, 0.5), (0.8, 0.5), (0.3, 0.1), CONVERGED, CONVERGED]},
                              every=2_000, steps=12_000, width=30, depth=3, key="a")
    full = _runs_and_history({0: [VIOLATING, (0.9, 0.5), (0.8, 0.5), (0.3, 0.1), CONVERGED, CONVERGED]},
                             every=2_000, width=30, depth=3, key="b")
    runs = pd.concat([smoke[0], short[0], full[0]], ignore_index=True)
    history = pd.concat([smoke[1], short[1], full[1]], ignore_index=True)
    cells = phase_cells(runs, history).set_index("steps")
    assert cells.at[12_000, "late"] == 1 and cells.at[40_001, "late"] == 0
    assert not cells.at[200, "judged"] and cells.loc[[12_000, 40_001], "judged"].all()
    text = escape_section(runs, history)
    table, _, rest = text.partition("Too short to judge")
    assert "helmholtz 20x2" not in table and "| helmholtz 30x3 (steps=12000) | jax | M2 | 1 |" in table
    assert f"(fewer than {MIN_JUDGED_STEPS:,} steps): helmholtz 20x2 jax M2 (200 steps)." in rest


def test_a_cell_where_every_run_stays_stuck_is_still_shown():
    runs, history = _runs_and_history({0: [TRIVIAL, TRIVIAL], 1: [TRIVIAL, TRIVIAL]})
    assert ("| helmholtz 50x3 | jax | M2 | 2 | 0 | - | 2: never | 2, - | never (seed 0: 1.00e+00) | 2 | 2 |"
            in escape_section(runs, history))


def test_cells_apart_variants_labelled_and_the_cavity_left_out():
    base = _runs_and_history({0: [VIOLATING, CONVERGED], 1: [VIOLATING, VIOLATING, CONVERGED]}, weighting="code",
                             key="a")
    variant = _runs_and_history({0: [(0.9, 0.1), (0.9, 0.1), (0.9, 0.1), CONVERGED]}, weighting="code-global",
                                key="b")
    cavity = _runs_and_history({0: [(0.4, 2.0), (0.2, 1.0)]}, problem="cavity", key="c", width=np.nan,
                               depth=np.nan, param_form="psi-p")
    diverged = _runs_and_history({5: [VIOLATING, CONVERGED]}, weighting="code", key="d")
    diverged[0]["status"] = "diverged"
    runs = pd.concat([base[0], variant[0], cavity[0], diverged[0]], ignore_index=True)
    history = pd.concat([base[1], variant[1], cavity[1], diverged[1]], ignore_index=True)
    cells = phase_cells(runs, history)
    assert sorted(cells["weighting"]) == ["code", "code-global"]  # no cavity cell; two Helmholtz cells
    assert cells.set_index("weighting").loc["code", "n"] == 2  # the diverged run is not counted
    text = escape_section(runs, history)
    assert "helmholtz 50x3 (weighting=code-global) | jax | M2 | 1 | 0 | - | 0 | 1, 40,000 |" in text
    assert "cavity" not in text.split("\n\n", 2)[2]  # only in the explanation, not in the table


def test_nothing_to_report_gives_no_section():
    runs, history = _runs_and_history({0: [(0.3, 1e-2), CONVERGED]})
    assert escape_section(runs, history) == ""
    assert escape_section(pd.DataFrame(), history) == ""


# --- the committed histories --------------------------------------------------------------------------

def _committed_runs(results: Path = PAPER, **config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed runs of a results directory with this configuration, and their logged rows only."""
    runs = pd.read_parquet(results / "runs.parquet")
    for column, value in config.items():
        runs = runs[runs[column] == value]
    history = pd.read_parquet(results / "history.parquet", columns=["key", "step", "rel_l2", "loss_boundary"],
                              filters=[("key", "in", list(runs["key"]))])
    return runs, history


@pytest.mark.skipif(not (PAPER / "history.parquet").exists(), reason="the committed paper results are not here")
def test_the_stuck_100x7_m2_seed_is_trivial_and_an_m1_seed_boundary_violating():
    runs, history = _committed_runs(problem="helmholtz", backend="jax", width=100, depth=7, method="M2", seed=9)
    stuck = run_phases(runs, history).iloc[0]
    # u = 0 from step 1,700 to 24,500 (results/paper/findings.md), and below error 0.5 only at 38,400
    assert stuck["trivial_left"] == 24_600 and stuck["escape_step"] == 38_400
    rows = history.sort_values("step")
    trivial = rows[phase_rows(rows["rel_l2"], rows["loss_boundary"])["trivial"].to_numpy()]
    assert trivial["step"].min() == 1_700 and trivial["rel_l2"].sub(1).abs().max() < 0.003
    assert stuck["violating_left"] > stuck["trivial_left"]  # it passes the violating phase on its way out

    runs, history = _committed_runs(problem="helmholtz", backend="jax", width=50, depth=3, method="M1")
    m1 = run_phases(runs, history)
    assert m1["trivial_left"].isna().all()  # M1's slow phase is not u = 0 ...
    assert (m1["violating_peak"] > 2.7).all()  # ... but a boundary-violating one, far above u = 0's error
    assert (m1["violating_left"] < m1["escape_step"]).all() and m1["violating_left"].median() == 4_450


@pytest.mark.skipif(not (ABLATIONS / "history.parquet").exists(), reason="the committed ablation results are not here")
def test_the_failed_code_global_seed_stays_boundary_violating_not_trivial():
    runs, history = _committed_runs(ABLATIONS, problem="helmholtz", method="M2", width=30, depth=3,
                                    weighting="code-global", seed=5)
    failed = run_phases(runs, history).iloc[0]
    # it ends at error 1.98 (results/paper/findings.md): a wrong solution with a violated boundary, not u = 0
    assert np.isinf(failed["violating_left"]) and np.isnan(failed["trivial_left"]) and np.isinf(failed["escape_step"])
    last = history.sort_values("step").iloc[-1]
    assert last["rel_l2"] > 1.9 and 0.1 < last["loss_boundary"] < 1
