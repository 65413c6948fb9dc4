"""Two cells compared seed by seed: paired where they share a network and seeds, unpaired otherwise.

In gradpath a seed fixes the batch stream and the initial weights of every network of one shape, so
two cells that differ only in the method's loss weighting (M2 against M1 on the plain network, M4
against M3 on the gated one) or in one setting that leaves the network alone (an ablation of the
annealing rule, say) start each seed from the same weights and see the same points: they are
paired by seed. Cells on different networks (M4 against M1, another width or gate) are not.
:func:`compare_cells` picks the test (:mod:`gradpath.suite.analysis.statistics`); :func:`method_comparisons` builds
REPORT.md's table of M2 vs M1, M4 vs M3 and the paper's headline M4 vs M1, with Benjamini-Hochberg
q-values over the table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradpath.backends.methods import METHODS
from gradpath.suite.analysis.statistics import Comparison, adjust_pvalues, paired_comparison, unpaired_comparison

# (method, against): the paper's pairs. The first two share a network; the third is its headline.
METHOD_PAIRS = (("M2", "M1"), ("M4", "M3"), ("M4", "M1"))
# settings that decide the shapes of the network's parameters, so which initial weights a seed draws
# (with the method's network kind). The gate form and the precision change what the network computes
# but not the weights a seed draws (backends/init.py), so cells differing in those stay paired.
NETWORK_SETTINGS = ("width", "depth", "layers")


def _network(cell: pd.Series) -> tuple[object, ...]:
    kind = METHODS[cell["method"]].net if cell["method"] in METHODS else cell["method"]
    return (kind, *(str(cell.get(c)) for c in NETWORK_SETTINGS), str(cell.get("problem")))


def shares_network(a: pd.Series, b: pd.Series) -> bool:
    """Whether two cells start each seed from the same initial weights and batches (same problem,
    network kind and parameter shapes)."""
    return _network(a) == _network(b)


def compare_cells(a: pd.Series, b: pd.Series, errors: dict[str, pd.Series]) -> Comparison:
    """Cell ``a`` against cell ``b`` (rows of :func:`gradpath.suite.analysis.tables.cell_stats`, whose index names them in
    ``errors``, from :func:`gradpath.suite.analysis.tables.errors_by_cell`): paired by seed where they share a network."""
    ea, eb = errors[a.name], errors[b.name]
    return paired_comparison(ea, eb) if shares_network(a, b) else unpaired_comparison(ea.to_numpy(), eb.to_numpy())


def comparison_columns(c: Comparison) -> dict[str, object]:
    """A comparison as flat table columns (``ratio`` = geometric mean of a / of b; below 1, a is better)."""
    return {"paired": c.paired, "pairs" if c.paired else "seeds": c.n, "ratio": c.ratio.value,
            "ratio_low": c.ratio.low, "ratio_high": c.ratio.high, "test": c.test, "p_value": c.p_value,
            "p_improvement": c.improvement.value, "p_improvement_low": c.improvement.low,
            "p_improvement_high": c.improvement.high, "note": c.note}


def method_comparisons(cells: pd.DataFrame, errors: dict[str, pd.Series]) -> pd.DataFrame:
    """One row per (configuration, backend, pair of :data:`METHOD_PAIRS`) with results for both methods,
    ``q_value``: Benjamini-Hochberg over every row of the table. ``cells`` carry a ``label`` column
    (:func:`gradpath.suite.analysis.paper_comparison.measured_cells`)."""
    rows = []
    for (label, backend), group in cells.groupby(["label", "backend"], sort=False):
        by = {m: cell for m, cell in ((c["method"], c) for _, c in group.iterrows())}
        for method, against in METHOD_PAIRS:
            if method in by and against in by:
                c = compare_cells(by[method], by[against], errors)
                rows.append({"configuration": label, "backend": backend, "comparison": f"{method} vs {against}",
                             **comparison_columns(c)})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["q_value"] = adjust_pvalues(table["p_value"].to_numpy())
    return table


def p_text(value: float) -> str:
    """A p- or q-value for a table: 3 decimals, or 1.2e-05 below 0.001; "-" where none."""
    return "-" if value is None or not np.isfinite(value) else (f"{value:.1e}" if value < 1e-3 else f"{value:.3f}")


def ratio_text(value: float, low: float, high: float) -> str:
    """``0.031 [0.024, 0.040]``: a ratio with its 95% interval (three significant digits)."""
    if not np.isfinite(value):
        return "-"
    bounds = f" [{low:.3g}, {high:.3g}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{value:.3g}{bounds}"


def comparison_lines(table: pd.DataFrame) -> list[str]:
    """The markdown of :func:`method_comparisons` (empty when no configuration has a pair)."""
    if table.empty:
        return []
    lines = ["| configuration | backend | comparison | paired | seeds | ratio of geo-means [95% CI] | test | p | "
             "q (BH) | P(lower) [95% CI] |\n", "|---|---|---|---|---|---|---|---|---|---|\n"]
    for _, r in table.iterrows():
        n = r.get("pairs") if r["paired"] else r.get("seeds")
        n_text = "-" if n is None or (isinstance(n, float) and math.isnan(n)) else str(int(n))
        test = r["test"].split(" (")[0] if r["test"] else r["note"]
        lines.append(f"| {r['configuration']} | {r['backend']} | {r['comparison']} | {'yes' if r['paired'] else 'no'} "
                     f"| {n_text} | {ratio_text(r['ratio'], r['ratio_low'], r['ratio_high'])} | {test} | "
                     f"{p_text(r['p_value'])} | {p_text(r['q_value'])} | "
                     f"{ratio_text(r['p_improvement'], r['p_improvement_low'], r['p_improvement_high'])} |\n")
    return lines
