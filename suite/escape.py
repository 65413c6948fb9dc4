"""When each run leaves the trivial solution: the first logged step at which its error falls below a threshold.

Helmholtz and Klein-Gordon networks start near u = 0, where the relative error is about 1, and
most runs leave that state within the first few thousand steps. A run that stays there longer has
fewer steps left to converge, so one late seed can move a cell's mean by a large factor (Helmholtz
100 x 7, M2: one seed left at step 38,400 and ended at 0.31 while the other nine ended between
4.7e-3 and 2.2e-2). This module finds those runs from the logged history, so that a cell that
misses the paper can be told apart from a method that is worse everywhere.

A run's escape step is one of: a step (its history is logged every ``log_every`` steps, so the
true step lies at most that much earlier); ``inf``, never below the threshold; ``nan``, nothing to
say: no logged error, or an error already below the threshold at the first logged step (the
cavity's spectral error starts at 0.3-0.6, so its runs have no trivial phase to leave).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from problems import problem_class
from suite.paper_comparison import measured_cells
from suite.tables import cell_groups

THRESHOLD = 0.5  # relative error: half-way from u = 0 (error 1) to the solution
LATE = 20_000  # half of the paper's 40,000 steps


def escape_steps(runs: pd.DataFrame, history: pd.DataFrame, threshold: float = THRESHOLD) -> pd.Series:
    """Per run (``runs``' index): its escape step, ``inf`` (never) or ``nan`` (nothing to say); see the module."""
    out = pd.Series(np.nan, index=runs.index, dtype=float)
    if history.empty or "key" not in history:
        return out
    by_key = dict(tuple(history.groupby("key", sort=False)))
    for i, run in runs.iterrows():
        rows = by_key.get(run["key"])
        metric = problem_class(run["problem"]).primary_metric
        if rows is None or metric not in rows:
            continue
        logged = rows[["step", metric]].apply(pd.to_numeric, errors="coerce").dropna().sort_values("step")
        if logged.empty or logged[metric].iloc[0] < threshold:
            continue
        below = logged.loc[logged[metric] < threshold, "step"]
        out[i] = float(below.iloc[0]) if len(below) else np.inf
    return out


def escape_cells(runs: pd.DataFrame, history: pd.DataFrame, threshold: float = THRESHOLD,
                 late: int = LATE) -> pd.DataFrame:
    """Per cell, over its complete runs with an escape step: their number, median and latest step (with its
    seed and error), how many are later than ``late`` and how many never, and their median error.

    Cells none of whose runs has an escape step (nothing logged, or no trivial phase) are left out.
    """
    done = runs[runs["status"] == "complete"]
    done = done.assign(escape_step=escape_steps(done, history, threshold))
    rows = []
    for cell, group in cell_groups(done):
        steps = group["escape_step"]
        if steps.isna().all():
            continue
        latest = steps.fillna(-np.inf).idxmax()
        escaped = steps[np.isfinite(steps)]
        rows.append({**cell, "n": int(steps.notna().sum()), "median_step": escaped.median(),
                     "latest_step": steps[latest], "latest_seed": group.at[latest, "seed"],
                     "latest_error": group.at[latest, "error"], "late": int((steps > late).sum()),
                     "never": int(np.isinf(steps).sum()),
                     "median_error": group.loc[steps.notna(), "error"].median()})
    return pd.DataFrame(rows)


def _step(value: float) -> str:
    return "never" if np.isinf(value) else "-" if np.isnan(value) else f"{int(value):,}"


def escape_section(runs: pd.DataFrame, history: pd.DataFrame) -> str:
    """The "Leaving the trivial solution" section of REPORT.md ("" when no run has an escape step)."""
    if runs.empty or "status" not in runs:
        return ""
    cells = escape_cells(runs, history)
    if cells.empty:
        return ""
    order = [c for c in ("problem", "param_form", "width", "depth") if c in cells] + ["label", "backend", "method"]
    cells = measured_cells(cells).sort_values(order, kind="stable")
    lines = ["## Leaving the trivial solution\n\n",
             f"The first logged step at which a run's error falls below {THRESHOLD:g}, for runs that start "
             "above it (near u = 0, error about 1). Runs already below it at their first logged step (most "
             "cavity runs) have no trivial phase to leave and are not counted in \"runs\". A step is that of "
             "the logged history (every "
             "`log_every` steps, 100 by default), so it is at most that late. "
             f"\"After {LATE:,}\": runs still above {THRESHOLD:g} half-way through the paper's 40,000 steps, "
             f"\"never\" included (runs that did not go below {THRESHOLD:g} at all). The median step is over "
             "the runs that did go below it; where a cell has \"never\" runs, the median of all its runs is at "
             "least as late. A late seed ends with a "
             "large error, and one such seed can move a cell's mean far more than its median.\n\n",
             "| configuration | backend | method | runs | median step | latest step (seed: error) "
             f"| after {LATE:,} | never | median error |\n",
             "|---|---|---|---|---|---|---|---|---|\n"]
    for c in cells.itertuples(index=False):
        latest = f"{_step(c.latest_step)} (seed {int(c.latest_seed)}: {c.latest_error:.2e})"
        lines.append(f"| {c.label} | {c.backend} | {c.method} | {c.n} | {_step(c.median_step)} | {latest} "
                     f"| {c.late} | {c.never} | {c.median_error:.2e} |\n")
    return "".join(lines) + "\n"
