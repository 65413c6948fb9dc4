"""REPORT.md's "Ablations" section: each cell that changes one setting of a baseline cell, beside it.

A *variant* is a cell (:func:`gradpath.suite.analysis.tables.cell_stats`) that equals another cell, its *baseline*,
in every configuration column but one, where the baseline holds that setting's default (the
paper's, i.e. :class:`gradpath.backends.settings.TrainSettings`' default or the problem's own for
``weighting``, ``width``, ``depth`` and its parameters). Width, depth and problem parameters count
only when the variant is a configuration the paper did not run (e.g. depth 4 for the "4 hidden
layers" wording), so that Table 2's other rows or the u-v-p cavity are never read as ablations. Seeds, devices and other
bookkeeping columns are not settings here.

Per variant: both means (the paper's statistic) and the baseline's paper value, so one row says
whether a paper-vs-code difference moves the error onto the paper; and the comparison of
:mod:`gradpath.suite.analysis.method_comparison`: the ratio of geometric means with its 95% bootstrap interval, paired
by seed (Wilcoxon signed-rank on log error) where variant and baseline draw the same initial weights,
as every change of the annealing rule, optimiser, precision or gate form does, and unpaired
(Mann-Whitney U) where the parameter shapes differ (a depth, a width); the probability that the variant ends lower; and
Benjamini-Hochberg q-values over the table's rows.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd

from gradpath.backends.settings import TrainSettings
from gradpath.problems import problem_class
from gradpath.suite.analysis.method_comparison import compare_cells, comparison_columns, p_text, ratio_text
from gradpath.suite.analysis.paper_comparison import FACTOR, configuration_label, sci
from gradpath.suite.analysis.statistics import adjust_pvalues
from gradpath.suite.analysis.tables import config_columns, is_missing, same_value

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


def variants(cells: pd.DataFrame, errors: dict[str, pd.Series]) -> pd.DataFrame:
    """One row per (variant, baseline) pair: the changed setting, both cells' statistics and the
    comparison (``errors``: :func:`gradpath.suite.analysis.tables.errors_by_cell`, keyed by the cells' index)."""
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
                rows.append(_pair(variant, base, column, errors))
    table = pd.DataFrame(rows)
    if not table.empty:
        table["q_value"] = adjust_pvalues(table["p_value"].to_numpy())
    return table


def _pair(variant: pd.Series, base: pd.Series, column: str, errors: dict[str, pd.Series]) -> dict[str, object]:
    paper = float(base["paper"])
    return {"configuration": configuration_label(base), "backend": variant["backend"], "method": variant["method"],
            "setting": column, "value": _shown(variant[column]), "baseline_value": _shown(base[column]),
            "n": int(variant["n"]), "baseline_n": int(base["n"]), "mean": float(variant["mean"]),
            "baseline_mean": float(base["mean"]), "change": float(variant["mean"] / base["mean"]),
            **comparison_columns(compare_cells(variant, base, errors)),
            "paper": paper, "paper_ratio": float(variant["mean"] / paper) if np.isfinite(paper) else math.nan,
            "baseline_paper_ratio": float(base["mean"] / paper) if np.isfinite(paper) else math.nan}


def ablation_lines(table: pd.DataFrame) -> list[str]:
    """The markdown table of :func:`variants`' ``table`` (empty when no cell is a one-setting variant of another)."""
    if table.empty:
        return []
    lines = ["| configuration | backend | method | setting | seeds | variant mean | baseline mean | "
             "variant/baseline (means) | variant/baseline (geo-means) [95% CI] | paired | p | q (BH) | "
             "P(variant lower) | paper | variant/paper | baseline/paper |\n",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"]
    for _, r in table.iterrows():
        within = "" if not np.isfinite(r["paper_ratio"]) else \
            (" (within 2x)" if 1 / FACTOR <= r["paper_ratio"] <= FACTOR else "")
        lines.append(f"| {r['configuration']} | {r['backend']} | {r['method']} | `{r['setting']}` "
                     f"{r['value']} (baseline {r['baseline_value']}) | {r['n']}, {r['baseline_n']} | {sci(r['mean'])} | "
                     f"{sci(r['baseline_mean'])} | {r['change']:.2f} | "
                     f"{ratio_text(r['ratio'], r['ratio_low'], r['ratio_high'])} | "
                     f"{'yes' if r['paired'] else 'no'} | {p_text(r['p_value'])} | {p_text(r['q_value'])} | "
                     f"{_ratio(r['p_improvement'])} | {sci(r['paper'])} | "
                     f"{_ratio(r['paper_ratio'])}{within} | {_ratio(r['baseline_paper_ratio'])} |\n")
    return lines


def _ratio(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.2f}"


ACROSS_ROWS = 3  # a change tried on at least this many configurations gets its own summary


def across_rows(table: pd.DataFrame, min_rows: int = ACROSS_ROWS) -> pd.DataFrame:
    """Per change (setting, value, baseline value), backend and method tried on at least ``min_rows``
    configurations with a paper value: ``rows``, the geometric means over those configurations of
    baseline/paper and variant/paper (a one-sided offset shows as a mean away from 1), how many rows the
    variant ends nearer the paper (in log distance), and how many the paired interval of
    variant/baseline lies wholly below or above 1."""
    if table.empty:
        return pd.DataFrame()
    known = table[np.isfinite(table["paper_ratio"]) & np.isfinite(table["baseline_paper_ratio"])]
    rows = []
    for (setting, value, base, backend, method), frame in known.groupby(
            ["setting", "value", "baseline_value", "backend", "method"], sort=False):
        if len(frame) < min_rows:
            continue
        before, after = np.log(frame["baseline_paper_ratio"]), np.log(frame["paper_ratio"])
        rows.append({"setting": setting, "value": value, "baseline_value": base, "backend": backend,
                     "method": method, "rows": len(frame), "configurations": ", ".join(frame["configuration"]),
                     "baseline_paper_geomean": float(np.exp(before.mean())),
                     "variant_paper_geomean": float(np.exp(after.mean())),
                     "nearer_paper": int((after.abs() < before.abs()).sum()),
                     "lower": int((frame["ratio_high"] < 1).sum()), "higher": int((frame["ratio_low"] > 1).sum())})
    return pd.DataFrame(rows)


def _natural(label: str) -> list:
    """A sort key reading the numbers in ``label`` as numbers ("helmholtz 30x5" before "helmholtz 100x3")."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]


def across_rows_lines(table: pd.DataFrame) -> list[str]:
    """The markdown of :func:`across_rows`: per change and method, each configuration's ratios, then the summary."""
    summary = across_rows(table)
    if summary.empty:
        return []
    lines = ["### Changes tried on several rows\n\n",
             f"Every change tried on at least {ACROSS_ROWS} configurations with a paper value: per configuration the "
             "baseline's and the variant's mean over the paper's, and variant/baseline paired by seed; then the "
             "geometric means of those ratios over the rows (an offset on every row shows as a mean away from 1), "
             "the rows where the variant ends nearer the paper, and the rows where the paired interval excludes 1.\n\n"]
    for _, change in summary.iterrows():
        part = table[(table["setting"] == change["setting"]) & (table["value"] == change["value"])
                     & (table["baseline_value"] == change["baseline_value"]) & (table["backend"] == change["backend"])
                     & (table["method"] == change["method"]) & np.isfinite(table["paper_ratio"])]
        part = part.iloc[sorted(range(len(part)), key=lambda i: _natural(part["configuration"].iloc[i]))]
        lines += [f"`{change['setting']}` {change['value']} (baseline {change['baseline_value']}), "
                  f"{change['backend']} {change['method']}:\n\n",
                  "| configuration | baseline/paper | variant/paper | variant/baseline (geo-means) [95% CI] | p |\n",
                  "|---|---|---|---|---|\n"]
        for _, r in part.iterrows():
            lines.append(f"| {r['configuration']} | {_ratio(r['baseline_paper_ratio'])} | {_ratio(r['paper_ratio'])} | "
                         f"{ratio_text(r['ratio'], r['ratio_low'], r['ratio_high'])} | {p_text(r['p_value'])} |\n")
        lines.append(f"| **geometric mean over {change['rows']} rows** | **{change['baseline_paper_geomean']:.2f}** | "
                     f"**{change['variant_paper_geomean']:.2f}** | lower on {change['lower']}, higher on "
                     f"{change['higher']} | nearer the paper on {change['nearer_paper']} of {change['rows']} |\n\n")
    return lines


def ablation_section(cells: pd.DataFrame, errors: dict[str, pd.Series]) -> str:
    """The whole "Ablations" section of REPORT.md, or "" when the runs hold no variant."""
    table = variants(cells, errors)
    lines = ablation_lines(table)
    if not lines:
        return ""
    return ("## Ablations: one setting changed against its baseline\n\n"
            "Each row changes one setting of a baseline cell (same problem, backend and method) from the "
            "paper's default; \"seeds\" counts the runs each mean is over, variant then baseline. Geo-means: "
            "the ratio of geometric means over seeds with its 95% bootstrap interval. Paired (same parameter shapes, so "
            "seed s starts both from the same weights and batches): Wilcoxon signed-rank test on the paired log "
            "errors, over the seeds both cells have; unpaired: Mann-Whitney U on log error. P(variant lower): "
            "the share of seeds (paired) or seed pairs (unpaired) on which the variant ends lower. q: "
            "Benjamini-Hochberg over every row of this table. The paper value is the baseline cell's.\n\n"
            + "".join(lines) + "\n" + "".join(across_rows_lines(table)))
