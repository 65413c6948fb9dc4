"""The figures of the ``balancing`` preset's report (:mod:`gradpath.suite.analysis.balancing`).

- ``balancing-error-vs-weight``: error vs the constant weight c (log-log), per problem and network:
  every seed a point, the geometric mean over seeds a line; vertical lines at each rule's final
  lambda (median over seeds of lambda_term / lambda_residual, the constant it ends at relative to the
  residual's weight), the ``code`` rule's error as a horizontal line.
- ``balancing-weights``: lambda per loss term vs step for every rule, median over seeds.
- ``balancing-profile``: Dolan-More performance profiles of the rules, the selected constants and the
  frozen weight across the problems and networks.

Drawn as :mod:`gradpath.suite.report.plots` draws (seaborn style, Agg canvas, no dates in the files), so the
same store gives byte-identical files. A figure without data is returned as :class:`Skipped`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatterSciNotation

from gradpath.suite.analysis.balancing import (DESIGN, HONEST, ORACLE, PROFILE_ARMS, Design, agreement_table,
                                               balancing_table, classify, final_weights, missing_runs,
                                               primary_backend, profile, profile_values, section_text,
                                               side_by_side_cost, table_markdown, terms as _terms)
from gradpath.suite.perf.campaign_cost import COST_CSV
from gradpath.suite.report.plots import DASHES, Figure, Result, Skipped, figure_grid, save_figure
from gradpath.suite.report.style import STYLE

PREFIX = "balancing-"
TAUS = np.geomspace(1, 100, 201)


def _style():
    return sns.axes_style("whitegrid", {"grid.linestyle": ":"})  # the report figures' look


def _legend(fig: MplFigure, handles: Sequence[Line2D]) -> None:
    fig.legend(handles=list(handles), loc="outside upper center", frameon=False, ncols=min(len(handles), 4))


def _log_y(ax) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatterSciNotation())


def _palette(names: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per rule or arm, in the order given (colorblind palette)."""
    colours = sns.color_palette("colorblind", 10)
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}


def _rules(arms: pd.DataFrame, design: Design) -> list[str]:
    present = set(arms.loc[arms["kind"] == "rule", "arm"])
    return [r for r in design.rules if r in present] + sorted(present - set(design.rules))


def _panels(arms: pd.DataFrame, design: Design = DESIGN) -> list[tuple[str, str]]:
    """(group, network) pairs, each group's networks in the design's order (plain before gated)."""
    order = {n: i for i, n in enumerate(design.networks)}
    return sorted({(g, n) for g, n in zip(arms["group"], arms["network"])},
                  key=lambda p: (p[0], order.get(p[1], len(order)), p[1]))


def _weights_long(arms: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """History rows of the rules' runs: key, step, arm, group, network, seed and the weight_ columns."""
    if history is None or history.empty or "step" not in history:
        return pd.DataFrame()
    columns = [c for c in history.columns if c.startswith("weight_")]
    rules = arms[(arms["kind"] == "rule") & arms["key"].notna()][["key", "arm", "problem", "group", "network", "seed"]]
    return history[["key", "step", *columns]].merge(rules, on="key", how="inner")


def error_vs_weight(arms: pd.DataFrame, history: pd.DataFrame, out: Path, design: Design = DESIGN) -> Result:
    """Error vs constant weight c, seeds and geometric mean, with the rules' final lambdas marked."""
    title = "Error vs constant loss weight"
    constants = arms[(arms["kind"] == "constant") & np.isfinite(arms["error"])]
    if constants.empty:
        return [], [Skipped(title, "no constant-weight run has finished with an error")]
    panels = _panels(constants, design)
    rules = _rules(arms, design)
    palette = _palette(rules)
    finals = final_weights(history)
    terms_seen: list[str] = []
    with _style(), sns.plotting_context("paper", rc=STYLE):
        fig, axes = figure_grid(len(panels), ncols=2)
        for ax, (group, network) in zip(axes, panels):
            part = constants[(constants["group"] == group) & (constants["network"] == network)]
            ax.scatter(part["c"], part["error"], s=10, color="0.45", alpha=0.7, linewidths=0, label="one seed")
            geo = part.groupby("c")["error"].apply(lambda e: 10 ** np.log10(e).mean()).sort_index()
            ax.plot(geo.index, geo.to_numpy(), color="black", marker="o", markersize=3.5, linewidth=1.4,
                    label="geometric mean over seeds")
            here = arms[(arms["group"] == group) & (arms["network"] == network) & (arms["kind"] == "rule")]
            for rule in rules:
                runs = here[here["arm"] == rule]
                lams = pd.DataFrame([finals[k] for k in runs["key"].astype(str) if k in finals])
                if lams.empty:
                    continue
                residual = lams.columns[0] if "residual" not in lams else "residual"
                for term in [t for t in lams.columns if t != residual]:
                    if term not in terms_seen:
                        terms_seen.append(term)
                    ratio = (lams[term] / lams[residual]).replace([np.inf, -np.inf], np.nan).dropna()
                    ratio = ratio[ratio > 0]
                    if len(ratio):
                        ax.axvline(float(ratio.median()), color=palette[rule], linewidth=1.1,
                                   dashes=DASHES[terms_seen.index(term) % len(DASHES)] or (None, None))
                if rule == design.reference:
                    error = runs["error"][np.isfinite(runs["error"])]
                    if len(error):
                        ax.axhline(float(10 ** np.log10(error).mean()), color=palette[rule], linewidth=1.0,
                                   linestyle=":")
            ax.set_xscale("log")
            _log_y(ax)
            ax.set_xlabel("constant weight c of every non-residual term")
            ax.set_ylabel("error (test)")
            ax.set_title(f"{group}, {network} network ({part['seed'].nunique()} seeds)")
        handles = [Line2D([], [], color="0.45", marker="o", linestyle="", markersize=3, label="one seed"),
                   Line2D([], [], color="black", marker="o", markersize=3, label="geometric mean")]
        handles += [Line2D([], [], color=palette[r], linewidth=1.1, label=f"{r}: final λ") for r in rules]
        handles += [Line2D([], [], color="0.3", linewidth=1.1, dashes=DASHES[i % len(DASHES)] or (None, None),
                           label=f"λ of {t}") for i, t in enumerate(terms_seen) if len(terms_seen) > 1]
        handles.append(Line2D([], [], color=palette.get(design.reference, "0.3"), linestyle=":",
                              label=f"{design.reference}: error"))
        _legend(fig, handles)
        name = f"{PREFIX}error-vs-weight"
        files = save_figure(fig, out, name)
    caption = ("Test error of the constant-weight runs (M1 on the plain network, M3 on the gated one) vs their "
               "weight c, log-log: grey points are seeds, the black line the geometric mean over seeds. Vertical "
               "lines: where each annealing rule's weights end, as the median over seeds of its final "
               "λ_term / λ_residual (the constant it ends at, relative to the residual's weight; "
               "line style per term); dotted horizontal line: the `code` rule's geometric-mean error.")
    return [Figure(name, title, caption, files)], []


def weight_trajectories(arms: pd.DataFrame, history: pd.DataFrame, out: Path, design: Design = DESIGN) -> Result:
    """lambda per term vs step, one line per rule (median over seeds), a panel per (problem, network, term)."""
    title = "Loss weights λ per rule"
    data = _weights_long(arms, history)
    columns = [c for c in data.columns if c.startswith("weight_") and data[c].notna().any()] if len(data) else []
    if data.empty or not columns:
        return [], [Skipped(title, "no annealing run has a history with loss weights")]
    rules = _rules(arms, design)
    palette = _palette(rules)
    # a row per (problem, network), a column per loss term in the problem's order (residual first)
    rows = []
    for g, n in _panels(data, design):
        part = data[(data["group"] == g) & (data["network"] == n)]
        order = list(_terms(str(part["problem"].iloc[0]), {}))
        present = [c for c in columns if part[c].notna().any()]
        rows.append([(g, n, c) for c in sorted(present, key=lambda c: (
            order.index(c.removeprefix("weight_")) if c.removeprefix("weight_") in order else len(order), c))])
    ncols = max(len(r) for r in rows)
    with _style(), sns.plotting_context("paper", rc=STYLE):
        fig, grid = figure_grid(len(rows) * ncols, ncols=ncols, width=3.4, height=2.6)
        cells = []
        for i, row in enumerate(rows):
            cells += list(zip(grid[i * ncols:(i + 1) * ncols], row))
            for ax in grid[i * ncols + len(row):(i + 1) * ncols]:
                ax.set_visible(False)
        for ax, (group, network, column) in cells:
            part = data[(data["group"] == group) & (data["network"] == network)]
            for rule in rules:
                lines = part[part["arm"] == rule]
                median = lines.groupby("step")[column].median().dropna()
                median = median[median > 0]
                if len(median):
                    ax.plot(median.index, median.to_numpy(), color=palette[rule], linewidth=1.2, label=rule)
            _log_y(ax)
            ax.set_xlabel("training step")
            ax.set_ylabel(f"λ ({column.removeprefix('weight_')})")
            ax.set_title(f"{group}, {network}: {column.removeprefix('weight_')}")
        handles = [Line2D([], [], color=palette[r], linewidth=1.2, label=r) for r in rules]
        _legend(fig, handles)
        name = f"{PREFIX}weights"
        files = save_figure(fig, out, name)
    caption = ("Loss weight λ of each term vs training step for every annealing rule (M2 on the plain network, M4 "
               "on the gated one): the median over seeds at each logged step. `code`, `code-global` and `mean` keep "
               "the residual's weight at 1; `grad-norm`, `relobralo` and `ntk` weight every term, so compare their "
               "terms' ratios, not their levels.")
    return [Figure(name, title, caption, files)], []


def profile_figure(table: pd.DataFrame, out: Path, design: Design = DESIGN) -> Result:
    """Performance profiles of the rules and selected constants across (problem, network)."""
    title = "Performance profiles across problems"
    curves = profile(table, TAUS, design)
    if curves.empty or len(curves.columns) < 2:
        return [], [Skipped(title, "no two problems or networks with every rule and constant")]
    rows = len(profile_values(table, design))
    palette = _palette([c for c in curves.columns if c not in PROFILE_ARMS])
    greys = {ORACLE: "0.55", HONEST: "black", "frozen": "0.3"}
    with _style(), sns.plotting_context("paper", rc=STYLE):
        fig, (ax,) = figure_grid(1, 1, width=5.6, height=3.6)
        for arm in curves.columns:
            ax.step(TAUS, curves[arm], where="post", label=arm, color=greys.get(arm, palette.get(arm)),
                    linestyle="--" if arm in PROFILE_ARMS else "-", linewidth=1.3)
        ax.set_xscale("log")
        ax.set_xlim(1, TAUS[-1])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("tau: error within this factor of the best arm's")
        ax.set_ylabel("share of problems and networks")
        ax.set_title(f"{rows} problem and network pairs")
        _legend(fig, ax.get_legend_handles_labels()[0])
        name = f"{PREFIX}profile"
        files = save_figure(fig, out, name)
    caption = ("Dolan-More performance profiles over the (problem, network) pairs where every arm has a result: "
               "for each arm, the share of pairs whose geometric-mean error is within a factor tau of the best "
               "arm's. Dashed: the oracle constant (chosen on the test error), the honest (cross-fitted) constant "
               "and the frozen annealed weight; solid: the annealing rules.")
    return [Figure(name, title, caption, files)], []


def balancing_figures(arms: pd.DataFrame, history: pd.DataFrame, table: pd.DataFrame, out: str | Path,
                      design: Design = DESIGN) -> Result:
    """Every balancing figure of the primary backend's runs into ``out``; a figure that raises is skipped
    with its error (and a warning), so the report is still written."""
    out = Path(out)
    backend = primary_backend(arms, design) if len(arms) else design.primary
    arms = arms[arms["backend"] == backend] if len(arms) else arms
    history = history if history is not None else pd.DataFrame()
    draws: list[tuple[str, Callable[[], Result]]] = [
        ("error_vs_weight", lambda: error_vs_weight(arms, history, out, design)),
        ("weight_trajectories", lambda: weight_trajectories(arms, history, out, design)),
        ("profile_figure", lambda: profile_figure(table, out, design))]
    drawn, skipped = [], []
    for what, draw in draws:
        if arms.empty:
            skipped.append(Skipped(what, "no run of M1-M4 yet"))
            continue
        try:
            made, missed = draw()
        except Exception as exc:  # one broken figure must not cost the report
            warnings.warn(f"figure {what} failed: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
            made, missed = [], [Skipped(what, f"failed: {type(exc).__name__}: {exc}")]
        drawn += made
        skipped += missed
    return drawn, skipped



def balancing_report(runs: pd.DataFrame, history: pd.DataFrame | None, out: str | Path,
                     design: Design = DESIGN, figures_dir: str = "figures") -> tuple[str, list[Path]]:
    """The balancing section of REPORT.md and the files behind it (``balancing.csv``, ``balancing.md``,
    ``balancing-agreement.csv``, ``balancing-missing.csv``, the figures under ``out/figures_dir``)."""
    out = Path(out)
    history = history if history is not None else pd.DataFrame()
    arms = classify(runs, history, design)
    table = balancing_table(arms, design) if len(arms) else pd.DataFrame()
    cost = out / COST_CSV  # `gradpath bench --campaign balancing --out OUT` wrote it, where it did
    table = side_by_side_cost(table, pd.read_csv(cost) if cost.is_file() else None, design)
    agreement = agreement_table(arms, design) if len(arms) else pd.DataFrame()
    missing = missing_runs(arms, design)
    drawn, skipped = balancing_figures(arms, history, table, out / figures_dir, design)
    lines = []
    for fig in drawn:
        png, pdf = (f"{figures_dir}/{p.name}" for p in fig.files)
        lines.append(f"**{fig.title}.** {fig.caption} ([PNG]({png}), [PDF]({pdf}))\n\n![{fig.title}]({png})\n\n")
    if skipped:
        lines += ["Not drawn:\n\n", *[f"- {s.title}: {s.reason}\n" for s in skipped], "\n"]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    frames = {"balancing.csv": table, "balancing-agreement.csv": agreement,
              "balancing-missing.csv": missing.assign(seeds=missing["seeds"].map(lambda s: " ".join(map(str, s))))}
    for name, frame in frames.items():
        if frame.empty:  # an empty table is removed rather than left stale from an earlier build
            (out / name).unlink(missing_ok=True)
            continue
        frame.to_csv(out / name, index=False)
        written.append(out / name)
    markdown = table_markdown(table)
    if markdown:
        (out / "balancing.md").write_text("".join(markdown))
        written.append(out / "balancing.md")
    else:
        (out / "balancing.md").unlink(missing_ok=True)
    text = section_text(table, agreement, missing, lines, design)
    return text, [*written, *(p for fig in drawn for p in fig.files)]
