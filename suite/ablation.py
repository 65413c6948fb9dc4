"""REPORT.md's "Ablations" section: each cell that changes one setting of a baseline cell, beside it.

A *variant* is a cell (:func:`suite.tables.cell_stats`) that equals another cell, its *baseline*,
in every configuration column but one, where the baseline holds that setting's default (the
paper's, i.e. :class:`backends.settings.TrainSettings`' default or the problem's own for
``weighting``, ``width``, ``depth`` and its parameters). Width, depth and problem parameters count
only when the variant is a configuration the paper did not run (e.g. depth 4 for the "4 hidden
layers" wording), so that Table 2's other rows or the u-v-p cavity are never read as ablations. Seeds, devices and other
bookkeeping columns are not settings here.

Per variant: both means, their ratio, Welch's t-test of the two means (from the cells' means,
standard deviations and seed counts) and the baseline's paper value, so one row says whether a
paper-vs-code difference moves the error, by how much, and whether it moves it onto the paper.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import stats

from backends.settings import TrainSettings
from problems import problem_class
from suite.paper_comparison import FACTOR, configuration_label, sci
from suite.tables import config_columns, is_missing, same_value

# columns that tell runs apart without being a setting one would ablate
NOT_SETTINGS = ("seed", "layers", "device", "compile", "log_every", "backend", "problem", "method")
ARCHITECTURE = ("width", "depth")


def _default(problem: str, column: str) -> object:
    """The baseline value of ``column`` for ``problem`` (None where the setting defers to the problem)."""
    cls = problem_class(problem)
    if column == "weighting":
        return cls.default_weighting
    if column == "width":
        return cls.layers[1]
    if column == "depth":
        return len(cls.layers) - 2
    if column.startswith("param_"):
        field = {f.name: f for f in dataclasses.fields(cls)}.get(column[len("param_"):])
        return None if field is None or field.default is dataclasses.MISSING else field.default
    return {f.name: f.default for f in dataclasses.fields(TrainSettings)}.get(column)


def _shown(value: object) -> str:
    return "default" if is_missing(value) else (f"{int(value)}" if isinstance(value, float) and value.is_integer() else str(value))


def variants(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, baseline) pair: the changed setting, both cells' statistics and the test."""
    rows = []
    for problem, frame in cells.groupby("problem", sort=False):
        frame = frame[frame["n"] > 0]
        columns = [c for c in config_columns(frame) if c not in NOT_SETTINGS and not frame[c].isna().all()]
        same = ["problem", "backend", "method"]
        for _, variant in frame.iterrows():
            for _, base in frame.iterrows():
                differ = [c for c in columns if not same_value(variant[c], base[c])]
                if len(differ) != 1 or any(variant[c] != base[c] for c in same):
                    continue
                column = differ[0]
                if not same_value(base[column], _default(problem, column)):
                    continue
                if (column in ARCHITECTURE or column.startswith("param_")) and np.isfinite(variant["paper"]):
                    continue  # a cell of the paper's own tables (Table 2's other rows, the u-v-p cavity)
                rows.append(_pair(variant, base, column))
    return pd.DataFrame(rows)


def _pair(variant: pd.Series, base: pd.Series, column: str) -> dict[str, object]:
    p = math.nan
    if variant["n"] > 1 and base["n"] > 1:
        p = float(stats.ttest_ind_from_stats(variant["mean"], variant["std"], variant["n"], base["mean"], base["std"],
                                             base["n"], equal_var=False).pvalue)
    paper = float(base["paper"])
    return {"configuration": configuration_label(base), "backend": variant["backend"], "method": variant["method"],
            "setting": column, "value": _shown(variant[column]), "baseline_value": _shown(base[column]),
            "n": int(variant["n"]), "baseline_n": int(base["n"]), "mean": float(variant["mean"]),
            "baseline_mean": float(base["mean"]), "change": float(variant["mean"] / base["mean"]), "p_value": p,
            "paper": paper, "ratio": float(variant["mean"] / paper) if np.isfinite(paper) else math.nan,
            "baseline_ratio": float(base["mean"] / paper) if np.isfinite(paper) else math.nan}


def ablation_lines(cells: pd.DataFrame) -> list[str]:
    """The markdown table of :func:`variants` (empty when no cell is a one-setting variant of another)."""
    table = variants(cells)
    if table.empty:
        return []
    lines = ["| configuration | backend | method | setting | seeds | variant mean | baseline mean | "
             "variant/baseline | Welch p | paper | variant/paper | baseline/paper |\n",
             "|---|---|---|---|---|---|---|---|---|---|---|---|\n"]
    for _, r in table.iterrows():
        within = "" if not np.isfinite(r["ratio"]) else (" (within 2x)" if 1 / FACTOR <= r["ratio"] <= FACTOR else "")
        lines.append(f"| {r['configuration']} | {r['backend']} | {r['method']} | `{r['setting']}` "
                     f"{r['value']} (baseline {r['baseline_value']}) | {r['n']}, {r['baseline_n']} | {sci(r['mean'])} | "
                     f"{sci(r['baseline_mean'])} | {r['change']:.2f} | {_p(r['p_value'])} | {sci(r['paper'])} | "
                     f"{_ratio(r['ratio'])}{within} | {_ratio(r['baseline_ratio'])} |\n")
    return lines


def _p(value: float) -> str:
    return "-" if not np.isfinite(value) else (f"{value:.1e}" if value < 1e-3 else f"{value:.3f}")


def _ratio(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.2f}"


def ablation_section(cells: pd.DataFrame) -> str:
    """The whole "Ablations" section of REPORT.md, or "" when the runs hold no variant."""
    lines = ablation_lines(cells)
    if not lines:
        return ""
    return ("## Ablations: one setting changed against its baseline\n\n"
            "Each row changes one setting of a baseline cell (same problem, backend and method) from the "
            "paper's default; \"seeds\" counts the runs each mean is over, variant then baseline. "
            "Welch p: two-sided test that the two mean errors are equal. The paper value is the baseline cell's.\n\n" + "".join(lines) + "\n")
