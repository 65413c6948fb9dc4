"""When each run leaves the trivial solution: the first logged step at which its error falls below a threshold.

Every PINN of the paper starts near u = 0, where the relative error is about 1, and most of its
runs leave that state within the first few thousand steps. A run that stays there longer has fewer
steps left to converge, so one late seed can move a cell's mean by a large factor (Helmholtz
100 x 7, M2: one seed left at step 38,400 and ended at 0.31 while the other nine ended between
4.7e-3 and 2.2e-2). This module finds those runs from the logged history, so that a cell that
misses the paper can be told apart from a method that is worse everywhere.
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
    """Per run (``runs``' index): the first logged step whose primary error is below ``threshold``.

    NaN where the run never got there, or has no logged error (history without that column).
    """
    out = pd.Series(np.nan, index=runs.index, dtype=float)
    if history.empty or "key" not in history:
        return out
    by_key = dict(tuple(history.groupby("key", sort=False)))
    for i, run in runs.iterrows():
        rows = by_key.get(run["key"])
        metric = problem_class(run["problem"]).primary_metric
        if rows is None or metric not in rows:
            continue
        below = rows.loc[pd.to_numeric(rows[metric], errors="coerce") < threshold, "step"]
        if len(below):
            out[i] = float(below.min())
    return out


def escape_cells(runs: pd.DataFrame, history: pd.DataFrame, threshold: float = THRESHOLD,
                 late: int = LATE) -> pd.DataFrame:
    """Per cell of complete runs: median and latest escape step (with its seed), runs later than ``late``, never."""
    done = runs[runs["status"] == "complete"]
    done = done.assign(escape_step=escape_steps(done, history, threshold))
    rows = []
    for cell, group in cell_groups(done):
        steps = group["escape_step"]
        latest = steps.fillna(np.inf).idxmax()
        rows.append({**cell, "n": len(group), "median_step": steps.median(),
                     "latest_step": steps[latest], "latest_seed": group.at[latest, "seed"],
                     "latest_error": group.at[latest, "error"], "late": int((steps > late).sum()),
                     "never": int(steps.isna().sum()), "median_error": group["error"].median()})
    return pd.DataFrame(rows)


def _step(value: float) -> str:
    return "never" if not np.isfinite(value) else f"{int(value):,}"


def escape_section(runs: pd.DataFrame, history: pd.DataFrame) -> str:
    """The "Leaving the trivial solution" section of REPORT.md ("" without runs that logged their error)."""
    if runs.empty or "status" not in runs:
        return ""
    cells = escape_cells(runs, history)
    if cells.empty or cells["median_step"].isna().all():
        return ""
    cells = measured_cells(cells)
    lines = ["## Leaving the trivial solution\n\n",
             f"The first logged step at which a run's error falls below {THRESHOLD:g} (it starts near u = 0, "
             f"error about 1). \"After {LATE:,}\": runs still at the trivial solution half-way through the "
             "paper's 40,000 steps; \"never\": runs that did not get there at all. A late seed ends with a "
             "large error, and one such seed can move a cell's mean far more than its median.\n\n",
             "| configuration | backend | method | runs | median step | latest step (seed: error) "
             f"| after {LATE:,} | never | median error |\n",
             "|---|---|---|---|---|---|---|---|---|\n"]
    for c in cells.itertuples(index=False):
        latest = f"{_step(c.latest_step)} (seed {int(c.latest_seed)}: {c.latest_error:.2e})"
        lines.append(f"| {c.label} | {c.backend} | {c.method} | {c.n} | {_step(c.median_step)} | {latest} "
                     f"| {c.late} | {c.never} | {c.median_error:.2e} |\n")
    return "".join(lines) + "\n"

