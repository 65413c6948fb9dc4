"""The two bad phases of a run, found from its logged history, and when the run leaves each of them.

Helmholtz and Klein-Gordon runs can sit far from the solution in two different states, and the
report must not call both "the trivial solution":

- **boundary-violating**: the network gets the boundary wrong and is further from the solution
  than u = 0 is; in M1's long stay there it fits the PDE residual meanwhile (the paper's Fig. 1
  shows M1's error concentrated at the boundary). A logged row is in it when its error is at
  least ``VIOLATING_ERROR`` = 1 (u = 0 has a relative error of exactly 1) and its boundary loss
  (``loss_boundary``, unweighted) is at least ``VIOLATING_BOUNDARY_LOSS`` = 0.1. Helmholtz's
  boundary loss is the sum of four edge mean squares and the exact boundary value is 0, so 0.1 is
  an RMS boundary value of 0.16, a third of the solution's RMS (0.5) inside.
- **trivial (u = 0)**: the network fits the boundary and nothing inside. A row is in it when its
  error is within ``TRIVIAL_ERROR_TOLERANCE`` = 0.05 of 1 and its boundary loss is at most
  ``TRIVIAL_BOUNDARY_LOSS`` = 1e-3 (an RMS boundary value of 0.016). Klein-Gordon's boundary
  values are not 0, so u = 0 does not fit them and its runs cannot be in this phase.

The thresholds come from the committed histories (results/paper and results/ablations: 766 runs of
Helmholtz and Klein-Gordon, 40,001 steps, a row every 100 steps):

- Helmholtz M1 and M3 (lambda = 1) reach boundary losses of 9.9-81 (per run, the largest among its
  rows with error >= 1). The paper preset's 124 Helmholtz M1 runs peak at errors of 2.8-7.8
  (median 5.0), with a boundary loss of 33 there (median); over all their rows in this phase the
  residual loss is a median of 1% of its u = 0 value (mean q^2 = 6,954). The annealed runs (M2, M4)
  pass through the same kind of state more mildly early on (peak errors 1.0-3.9, median 1.3 for M2
  and 1.6 for M4; a run's largest boundary loss 0.17-8.1), and one seed of 30 x 3 M2 with
  ``weighting=code-global`` stays in it to the end (error 1.98, boundary loss 0.23, lambda about
  110): not u = 0, but a wrong solution with a violated boundary. Every Helmholtz run with the
  code's or code-global's statistics enters this phase. When the paper preset's runs leave it
  barely depends on the boundary-loss threshold: from 0.03 to 0.3 the median step is the same for
  M1 (3,700), M3 (900) and M4 (400) and moves by 100 for M2 (1,200-1,300). From 1 up, the annealed
  runs' early transient drops out (at 1, 67 of 124 M2 runs enter the phase; at 4, one).
- The rows within 0.05 of error 1 with a boundary loss of at most 1e-3 form one cluster (boundary
  loss 5e-8, median). The twenty runs of ``weighting=paper`` (lambda runs away to 3e5-1.5e8) sit in
  it from step 100-300 to the end; the paper preset's stuck 100 x 7 M2 seed 9 from step 1,700 to
  24,500 (boundary loss 5e-5, median). In every such row the residual loss is 0.67-1.38 times its
  u = 0 value: nothing inside is fitted. With an error tolerance of 0.01 or 0.1 the same 25 runs
  enter the phase; a boundary loss of 1e-4 drops two brief stays, and 1e-2 adds fourteen annealed
  runs that touch it early (all gone by step 2,800).

A run **entered** a phase if any logged row is in it, and **left** it at the first logged step after
its last such row (a run may go in and out; the last row counts), so at most one log interval
(``log_every``, 100 by default) after it did. It **never left** if its last logged row is in the
phase. The boundary loss is that of the row's batch, so one row is noisy; a phase is only as exact
as the log.

Beside the phases, a run's escape step is the first logged step at which its error falls below
``THRESHOLD`` = 0.5 (half-way from u = 0 to the solution): ``inf``, never; ``nan``, nothing to say
(no logged error, or already below the threshold at the first logged row: 82 of the 160 cavity
runs, whose spectral error starts at 0.29-0.73 and which enter neither phase). A run leaves a bad
phase well before that: Helmholtz 50 x 3 M1 leaves the boundary-violating phase
at step 4,450 (median, JAX) and first goes below 0.5 at 6,750. The paper preset's M1 runs leave it
with their boundary loss still at 2.4 (median; 1.4-3.3 over the 124 runs), and their error keeps
falling with it: the slow part of M1 is the boundary, before and after the error drops below 1.

A run is **late** when it goes below 0.5 after half of its own steps (``LATE_FRACTION``), or never.
Runs shorter than ``MIN_JUDGED_STEPS`` = 10,000 steps (a smoke run has 200) are too short to judge:
of the committed runs that left the boundary-violating phase, 98% had left it by step 10,000, and
of those that went below 0.5, 94% had by then.

The steps quoted here are :func:`run_phases` on the two results directories' ``runs.parquet`` and
``history.parquet`` (their union; the ablations' baselines are the paper campaign's runs), the other
numbers plain statistics of the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradpath.problems import problem_class
from gradpath.suite.analysis.paper_comparison import measured_cells
from gradpath.suite.analysis.tables import cell_groups

THRESHOLD = 0.5  # relative error: half-way from u = 0 (error 1) to the solution
VIOLATING_ERROR = 1.0
VIOLATING_BOUNDARY_LOSS = 0.1
TRIVIAL_ERROR_TOLERANCE = 0.05
TRIVIAL_BOUNDARY_LOSS = 1e-3
LATE_FRACTION = 0.5
MIN_JUDGED_STEPS = 10_000
BOUNDARY_LOSS = "loss_boundary"  # the history's unweighted boundary loss (gradpath.backends.training logs loss_<term>)
PHASES = {"violating": "boundary-violating", "trivial": "trivial (u = 0)"}  # column prefix -> name in the report


def phase_rows(error: pd.Series, boundary_loss: pd.Series) -> pd.DataFrame:
    """Per logged row (the index of ``error``): whether it is in each phase, as columns ``violating``
    and ``trivial`` (see the module). A row with a missing boundary loss is in neither."""
    return pd.DataFrame({
        "violating": (error >= VIOLATING_ERROR) & (boundary_loss >= VIOLATING_BOUNDARY_LOSS),
        "trivial": ((error - 1).abs() <= TRIVIAL_ERROR_TOLERANCE) & (boundary_loss <= TRIVIAL_BOUNDARY_LOSS),
    }, index=error.index)


def _left(steps: np.ndarray, inside: np.ndarray) -> float:
    """The first logged step after the last row ``inside`` the phase; inf if that is the last row, nan if none is."""
    if not inside.any():
        return np.nan
    last = np.flatnonzero(inside)[-1]
    return np.inf if last == len(steps) - 1 else float(steps[last + 1])


def _logged(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A run's rows with a logged ``metric``, by step; the boundary loss with them where it was logged
    (the long history is the union of all runs' columns, so a run may have empty ones)."""
    columns = ["step", metric] + ([BOUNDARY_LOSS] if BOUNDARY_LOSS in rows else [])
    logged = rows[columns].apply(pd.to_numeric, errors="coerce").dropna(subset=["step", metric])
    return logged.sort_values("step")


def _escape(logged: pd.DataFrame, metric: str, threshold: float) -> float:
    if logged.empty or logged[metric].iloc[0] < threshold:
        return np.nan
    below = logged.loc[logged[metric] < threshold, "step"]
    return float(below.iloc[0]) if len(below) else np.inf


def _history_by_key(history: pd.DataFrame) -> dict[str, pd.DataFrame]:
    if history.empty or "key" not in history:
        return {}
    return dict(tuple(history.groupby("key", sort=False)))


def escape_steps(runs: pd.DataFrame, history: pd.DataFrame, threshold: float = THRESHOLD) -> pd.Series:
    """Per run (``runs``' index): its escape step, ``inf`` (never) or ``nan`` (nothing to say); see the module."""
    out = pd.Series(np.nan, index=runs.index, dtype=float)
    by_key = _history_by_key(history)
    for i, run in runs.iterrows():
        rows = by_key.get(run["key"])
        metric = problem_class(run["problem"]).primary_metric
        if rows is not None and metric in rows:
            out[i] = _escape(_logged(rows, metric), metric, threshold)
    return out


def run_phases(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Per run (``runs``' index), from its logged history:

    - ``violating_left``, ``trivial_left``: the step at which it left each phase, ``inf`` if it never
      did, ``nan`` if it never entered it (or logged no error or boundary loss);
    - ``violating_peak``: its largest error while boundary-violating (``nan`` if never);
    - ``escape_step``: as :func:`escape_steps`;
    - ``length``: its own number of steps (the ``steps`` setting, else its last logged step; ``nan``
      if it logged no error) and ``judged``: whether that is at least ``MIN_JUDGED_STEPS``.
    """
    columns = ["violating_left", "violating_peak", "trivial_left", "escape_step", "length"]
    out = pd.DataFrame(np.nan, index=runs.index, columns=columns)
    by_key = _history_by_key(history)
    for i, run in runs.iterrows():
        rows = by_key.get(run["key"])
        metric = problem_class(run["problem"]).primary_metric
        if rows is None or metric not in rows:
            continue
        logged = _logged(rows, metric)
        if logged.empty:
            continue
        out.at[i, "escape_step"] = _escape(logged, metric, THRESHOLD)
        out.at[i, "length"] = logged["step"].iloc[-1]
        if BOUNDARY_LOSS in logged:
            inside = phase_rows(logged[metric], logged[BOUNDARY_LOSS])
            steps = logged["step"].to_numpy()
            for phase in PHASES:
                out.at[i, f"{phase}_left"] = _left(steps, inside[phase].to_numpy())
            if inside["violating"].any():
                out.at[i, "violating_peak"] = logged.loc[inside["violating"], metric].max()
    if "steps" in runs:  # the setting, for runs that logged an error (the others have nothing to judge)
        configured = pd.to_numeric(runs["steps"], errors="coerce")
        out["length"] = configured.where(configured.notna() & out["length"].notna(), out["length"])
    out["judged"] = out["length"] >= MIN_JUDGED_STEPS
    return out


def phase_cells(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Per cell, over its complete runs with a logged error: their number (``n``) and length; per phase
    (``violating``, ``trivial``) how many ``<phase>_entered`` it, the median, first and last step at
    which they left it (``<phase>_median``, ``_first``, ``_last``, over those that did) and how many
    ``<phase>_never`` left; the median peak error while boundary-violating; how many started above
    error 0.5 (``n_escape``), the median step at which they went below it, the latest (with its seed
    and final error), how many were ``late`` (after ``LATE_FRACTION`` of their steps, or never) and
    ``never``; the median final error, and ``judged`` (the cell's runs are at least ``MIN_JUDGED_STEPS``
    long).

    Cells none of whose runs entered a phase or started above 0.5 (nothing logged, or every run below
    0.5 from its first logged row) are left out.
    """
    done = runs[runs["status"] == "complete"]
    done = done.join(run_phases(done, history))
    rows = []
    for cell, group in cell_groups(done):
        group = group[group["length"].notna()]  # a logged error
        steps = group["escape_step"]
        if group.empty or (steps.isna().all() and group[[f"{p}_left" for p in PHASES]].isna().all(axis=None)):
            continue
        row = {**cell, "n": len(group), "length": group["length"].max(), "judged": bool(group["judged"].all()),
               "violating_peak": group["violating_peak"].median(), "median_error": group["error"].median()}
        for phase in PHASES:
            left = group[f"{phase}_left"].dropna()
            finite = left[np.isfinite(left)]
            row.update({f"{phase}_entered": len(left), f"{phase}_never": int(np.isinf(left).sum()),
                        f"{phase}_median": finite.median(), f"{phase}_first": finite.min(),
                        f"{phase}_last": finite.max()})
        latest = steps.fillna(-np.inf).idxmax()
        late = steps > LATE_FRACTION * group["length"]  # inf (never) included; nan is not late
        row.update({"n_escape": int(steps.notna().sum()), "median_step": steps[np.isfinite(steps)].median(),
                    "latest_step": steps[latest], "latest_seed": group.at[latest, "seed"],
                    "latest_error": group.at[latest, "error"], "late": int(late.sum()),
                    "never": int(np.isinf(steps).sum())})
        rows.append(row)
    return pd.DataFrame(rows)


def _step(value: float) -> str:
    return "never" if np.isinf(value) else "-" if np.isnan(value) else f"{int(value):,}"


def _phase_text(cell: pd.Series, phase: str) -> str:
    """``entered: median (first-last)`` of the steps at which a cell's runs left a phase, and how many never did."""
    entered, never = int(cell[f"{phase}_entered"]), int(cell[f"{phase}_never"])
    if entered == 0:
        return "0"
    if entered == never:
        return f"{entered}: never"
    first, last = cell[f"{phase}_first"], cell[f"{phase}_last"]
    text = f"{entered}: {_step(cell[f'{phase}_median'])}"
    if first != last:
        text += f" ({_step(first)}-{_step(last)})"
    return text + (f", {never} never" if never else "")


def escape_section(runs: pd.DataFrame, history: pd.DataFrame) -> str:
    """The "Boundary-violating and trivial phases" section of REPORT.md ("" when no run entered a phase
    or started above error 0.5)."""
    if runs.empty or "status" not in runs:
        return ""
    cells = phase_cells(runs, history)
    if cells.empty:
        return ""
    order = [c for c in ("problem", "param_form", "width", "depth") if c in cells] + ["label", "backend", "method"]
    cells = measured_cells(cells).sort_values(order, kind="stable")
    judged, short = cells[cells["judged"]], cells[~cells["judged"]]
    lines = ["## Boundary-violating and trivial phases\n\n",
             "Two states keep a run far from the solution (`suite/analysis/escape.py` derives and checks the criteria "
             "on the committed histories). **Boundary-violating**: the network gets the boundary wrong and is "
             f"further from the solution than u = 0 is: error at least {VIOLATING_ERROR:g} "
             f"with a boundary loss of at least {VIOLATING_BOUNDARY_LOSS:g} (the paper's Fig. 1 shows M1's error "
             "concentrated at the boundary). "
             f"**Trivial (u = 0)**: the network fits the boundary and nothing inside: error within "
             f"{TRIVIAL_ERROR_TOLERANCE:g} of 1, boundary loss at most {TRIVIAL_BOUNDARY_LOSS:g}. "
             "Per phase, \"seeds: median (range)\" gives how many runs entered it and the logged step after "
             "their last row in it (at most `log_every` steps, 100 by default, after they left), over the runs "
             "that left; \"never\": runs still in it at their last logged row. "
             f"\"Below {THRESHOLD:g}\": the first logged step at which the error falls below {THRESHOLD:g}, over "
             f"the runs that start above it (\"with\"); \"late\": after half of the run's own steps, or never. "
             "A late seed ends with a large error, and one such seed can move a cell's mean far more than "
             "its median.\n\n"]
    if not judged.empty:
        lines += [f"| configuration | backend | method | runs | {PHASES['violating']}: seeds: left at | its peak "
                  f"error (median) | {PHASES['trivial']}: seeds: left at | below {THRESHOLD:g}: with, median step "
                  "| latest (seed: error) | late | never | median error |\n",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|\n"]
        for _, c in judged.iterrows():
            peak = f"{c['violating_peak']:.2f}" if np.isfinite(c["violating_peak"]) else "-"
            latest = (f"{_step(c['latest_step'])} (seed {int(c['latest_seed'])}: {c['latest_error']:.2e})"
                      if c["n_escape"] else "-")
            lines.append(f"| {c['label']} | {c['backend']} | {c['method']} | {c['n']} | "
                         f"{_phase_text(c, 'violating')} | {peak} | {_phase_text(c, 'trivial')} | "
                         f"{c['n_escape']}, {_step(c['median_step'])} | {latest} | {c['late']} | {c['never']} | "
                         f"{c['median_error']:.2e} |\n")
        lines.append("\n")
    if not short.empty:
        lengths = sorted({int(c["length"]) for _, c in short.iterrows()})
        if len(lengths) == 1 and len(short) > 6:  # a smoke campaign: one line, not a list of every cell
            text = f"{len(short)} cells, all of {lengths[0]:,} steps"
        else:
            text = "; ".join(sorted({f"{c['label']} {c['backend']} {c['method']} ({int(c['length']):,} steps)"
                                     for _, c in short.iterrows()}))
        lines.append(f"Too short to judge (fewer than {MIN_JUDGED_STEPS:,} steps): {text}.\n\n")
    return "".join(lines)
