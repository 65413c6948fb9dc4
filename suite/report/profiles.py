"""Methods across many cells: performance profiles (a figure) and the rank stability of the paper's
ordering across seeds (a REPORT.md section).

A *performance profile* (Dolan & More 2002) of a method is the share of configurations on which its
error is within a factor tau of the best method's, as a curve over tau; it compares M1-M4 over a whole
table in one picture (a method that is best everywhere starts at 1 at tau = 1). Each cell's error is
its geometric mean over seeds (:mod:`gradpath.suite.analysis.statistics`), so one bad seed does not decide a curve.

*Rank stability*: on how many seeds the paper's ordering of the four methods in a configuration
(from the paper's own values) holds exactly, the mean Kendall tau between a seed's ordering and the
paper's, and Kendall's W, the concordance of the seeds' rankings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from gradpath.suite.analysis.paper_comparison import measured_cells
from gradpath.suite.report.plots import Figure, Result, Skipped
from gradpath.suite.analysis.statistics import performance_profile, rank_stability
from gradpath.suite.analysis.tables import METHOD_ORDER, cell_stats

TAUS = np.geomspace(1, 100, 201)
NAME = "performance-profiles"
# deterministic PDF bytes: no creation date (PNG carries only matplotlib's Software key)
PDF_METADATA = {"CreationDate": None, "ModDate": None}


def _profile_values(cells: pd.DataFrame) -> pd.DataFrame:
    """Rows: configurations (label), columns: methods, values: geometric mean error."""
    table = cells.pivot_table(index="label", columns="method", values="geomean", aggfunc="first", sort=True)
    table = table[[m for m in METHOD_ORDER if m in table.columns]]
    # only configurations where every method ran: where one method ran alone it would count as the best
    return table.dropna()


def profile_panels(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per panel title, the (configuration x method) geometric means its profile is drawn from: per
    backend, Table 2's rows (Helmholtz at the paper's parameters) and every configuration, each where every
    method has a result (an ablation variant run for one or two methods would otherwise count as the best
    where it ran alone)."""
    cells = measured_cells(cell_stats(runs))
    panels = {}
    for backend, group in cells.groupby("backend", sort=True):
        helmholtz = group[(group["problem"] == "helmholtz") & np.isfinite(group["paper"])]
        for title, frame in ((f"Table 2's rows, {backend}", helmholtz), (f"every configuration, {backend}", group)):
            values = _profile_values(frame)
            if len(values) >= 2 and values.shape[1] >= 2:
                panels[f"{title} ({len(values)} configurations)"] = values
    return panels


def performance_profiles(runs: pd.DataFrame, history: pd.DataFrame, out: Path, store_root: Path) -> Result:
    """The report figure: one panel per :func:`profile_panels` entry, M1-M4 over tau on a log axis."""
    panels = profile_panels(runs)
    title = "Performance profiles of M1-M4"
    if not panels:
        return [], [Skipped(title, "fewer than two configurations with two or more methods")]
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = MplFigure(figsize=(4.6 * ncols, 3.2 * nrows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    palette = dict(zip(METHOD_ORDER, sns.color_palette("colorblind", len(METHOD_ORDER))))
    for ax, (panel, values) in zip(axes, panels.items()):
        profile = performance_profile(values, TAUS)
        for method in profile.columns:
            ax.step(TAUS, profile[method], where="post", label=method, color=palette.get(method))
        ax.set_xscale("log")
        ax.set_xlim(1, TAUS[-1])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("tau: error within this factor of the best method's")
        ax.set_ylabel("share of configurations")
        ax.set_title(panel)
        ax.grid(True, which="major", linestyle=":")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), frameon=False)
    out.mkdir(parents=True, exist_ok=True)
    files = (out / f"{NAME}.png", out / f"{NAME}.pdf")
    fig.savefig(files[0], dpi=150)
    fig.savefig(files[1], metadata=PDF_METADATA)
    caption = ("Dolan-More performance profiles: for each method, the share of configurations whose error "
               "(geometric mean over seeds) is within a factor tau of the best method's in that configuration. "
               "Higher and further left is better; a method missing from a configuration never counts.")
    return [Figure(NAME, title, caption, files)], []


def rank_table(errors: dict[str, pd.Series], cells: pd.DataFrame) -> pd.DataFrame:
    """Per (configuration, backend) with all four methods and the paper's four values: the paper's ordering,
    ours by geometric means, and :func:`gradpath.suite.analysis.statistics.rank_stability` over the seeds that ran all four
    (``errors``: :func:`gradpath.suite.analysis.tables.errors_by_cell`)."""
    m = measured_cells(cells)
    rows = []
    for (label, backend), group in m.groupby(["label", "backend"], sort=False):
        by = group.reset_index().set_index("method")
        if not set(METHOD_ORDER) <= set(by.index) or not np.isfinite(by.loc[list(METHOD_ORDER), "paper"]).all():
            continue
        paper_order = list(by.loc[list(METHOD_ORDER), "paper"].sort_values(kind="stable").index)
        ours_order = list(by.loc[list(METHOD_ORDER), "geomean"].sort_values(kind="stable").index)
        per_seed = pd.DataFrame({method: errors[by.at[method, "cell"]] for method in METHOD_ORDER})
        r = rank_stability(per_seed, paper_order)
        rows.append({"configuration": label, "backend": backend, "paper_order": " < ".join(paper_order),
                     "geomean_order": " < ".join(ours_order), "seeds": r.seeds, "agree": r.agree,
                     "kendall_tau": r.kendall_tau, "kendall_w": r.kendall_w})
    return pd.DataFrame(rows)


def _two(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.2f}"


def rank_lines(table: pd.DataFrame) -> list[str]:
    """The markdown of :func:`rank_table` with a pooled line per backend."""
    if table.empty:
        return []
    lines = ["How often does a seed order the four methods as the paper's values do? \"Seeds\": seeds that ran all "
             "four; \"exact\": seeds whose four errors fall in the paper's order; Kendall tau: a seed's ordering "
             "against the paper's, averaged over seeds (1: always the same order); Kendall's W: how alike the seeds "
             "rank the methods (1: every seed alike), from the Friedman statistic.\n\n",
             "| configuration | backend | paper's order | ours (geo-means) | seeds | exact | mean Kendall tau | "
             "Kendall's W |\n", "|---|---|---|---|---|---|---|---|\n"]
    for _, r in table.iterrows():
        lines.append(f"| {r['configuration']} | {r['backend']} | {r['paper_order']} | {r['geomean_order']} | "
                     f"{r['seeds']} | {r['agree']} | {_two(r['kendall_tau'])} | {_two(r['kendall_w'])} |\n")
    lines.append("\n")
    for backend, group in table.groupby("backend", sort=False):
        same = int((group["paper_order"] == group["geomean_order"]).sum())
        lines.append(f"- {backend}: {int(group['agree'].sum())} of {int(group['seeds'].sum())} seeds over "
                     f"{len(group)} configuration{'s' if len(group) != 1 else ''} follow the paper's order exactly; "
                     f"the geometric means do in "
                     f"{same} of {len(group)}.\n")
    return lines


def rank_section(errors: dict[str, pd.Series], cells: pd.DataFrame) -> str:
    """REPORT.md's "The paper's ordering, seed by seed" section ("" where no configuration has all four)."""
    lines = rank_lines(rank_table(errors, cells))
    return "### The paper's ordering, seed by seed\n\n" + "".join(lines) + "\n" if lines else ""


FIGURES_ACROSS_CELLS: Sequence = (performance_profiles,)
