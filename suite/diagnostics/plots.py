"""Figures of the gradient-pathology diagnostics (seaborn on matplotlib's Agg canvas, PNG).

- :func:`histogram_figure`: per-layer distributions of grad L_r and grad(lambda_i L_i), one
  panel per weight matrix and one row per run (paper Figs. 2, 3, 7, 12, 13), drawn from the
  fixed-bin histograms of a ``gradients.npz`` as densities (count / (entries x bin width)).
- :func:`sigma_max_figure`: sigma_max of the Hessian vs training step, one panel per loss and, per
  run, the median over seeds as a line and their range (min to max) as a band (Figs. 5, 11).
- :func:`spectrum_figure`: all Hessian eigenvalues of each loss in ascending order (Fig. 4a).
- :func:`losses_figure`: the loss terms over training with their running medians (Fig. 4b).

The look follows suite/report/style.py: whitegrid with dotted grid lines, the colorblind palette, the
same font sizes, constrained layout, 150 dpi.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from gradpath.backends.diagnostics import HIST_EDGES, GradientRecord, histogram_quantile
from gradpath.suite.report.style import DPI, STYLE

LOSS_LABELS = {"total": "total loss L", "residual": "L_r", "boundary": "L_ub", "initial": "L_u0"}


def _style():
    return sns.axes_style("whitegrid", {"grid.linestyle": ":"})


def _canvas(nrows: int, ncols: int, width: float = 3.2, height: float = 2.6) -> tuple[MplFigure, np.ndarray]:
    fig = MplFigure(figsize=(width * ncols, height * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: MplFigure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _steps_axis(ax) -> None:
    """Training steps as 0, 10k, 20k: five-digit tick labels would run into each other."""
    ax.set_xlabel("training step")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))


def _gradient_label(term: str, index: int) -> str:
    symbol = LOSS_LABELS.get(term, f"L_{term}")
    return f"grad {symbol}" if index == 0 else f"grad lambda*{symbol}"


def histogram_figure(records: Sequence[tuple[str, GradientRecord]], path: Path, *, step: int | None = None) -> Path:
    """Per-layer gradient densities of every term at ``step`` (default: each record's last checkpoint)."""
    ncols = max(len(r.keys) for _, r in records)
    colours = sns.color_palette("colorblind", 10)
    widths = np.diff(HIST_EDGES)
    centres = 0.5 * (HIST_EDGES[:-1] + HIST_EDGES[1:])
    with _style(), sns.plotting_context("paper", rc=STYLE):
        fig, axes = _canvas(len(records), ncols)
        for row, (label, record) in zip(axes, records):
            at = record.steps.index(step) if step is not None else len(record.steps) - 1
            counts = record.counts[at]
            for j, ax in enumerate(row):
                if j >= len(record.keys):
                    ax.set_visible(False)
                    continue
                size = record.sizes[j]
                top = 0.0
                for i, term in enumerate(record.terms):
                    density = counts[i, j, 1:-1] / (size * widths)  # the finite bins only
                    ax.stairs(density, HIST_EDGES, color=colours[i], linewidth=1.1, label=_gradient_label(term, i),
                              fill=i == 0, alpha=0.35 if i == 0 else 1.0)
                    if i == 0:
                        ax.stairs(density, HIST_EDGES, color=colours[i], linewidth=1.1)
                    top = max(top, density.max())
                # x range: where 99.9% of the residual's entries lie, so its shape fills the panel
                reach = histogram_quantile(counts[0, j], 0.999)
                ax.set_xlim(-reach, reach)
                ax.xaxis.set_major_locator(MaxNLocator(5, symmetric=True))
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
                ax.set_yscale("log")
                residual = counts[0, j, 1:-1] / (size * widths)
                visible = residual[(np.abs(centres) < reach) & (residual > 0)]
                ax.set_ylim(max(visible.min() if visible.size else top * 1e-6, top * 1e-8), top * 3)
                ax.set_title(f"{label}: layer {j + 1} ({record.keys[j]}), step {record.steps[at]}")
                ax.set_xlabel("gradient entry")
                if j == 0:
                    ax.set_ylabel("density")
        handles, labels = axes[0][0].get_legend_handles_labels()
        keep = [(h, t) for h, t in zip(handles, labels) if t]
        fig.legend([h for h, _ in keep], [t for _, t in keep], loc="outside upper center", ncols=len(keep),
                   frameon=False)
        return _save(fig, path)


def seed_band(frames: Sequence[pd.DataFrame], column: str) -> pd.DataFrame:
    """Median, min and max of ``column`` over the seeds' histories at the steps all of them logged it.

    Returns:
        Columns ``step``, ``median``, ``low``, ``high`` and ``seeds`` (how many seeds each row pools).
    """
    series = [f[["step", column]].dropna().set_index("step")[column] for f in frames if column in f]
    if not series:
        return pd.DataFrame(columns=["step", "median", "low", "high", "seeds"])
    values = pd.concat(series, axis=1, join="inner")  # a step missing in one seed would bias the band
    return pd.DataFrame({"step": values.index.to_numpy(), "median": values.median(axis=1).to_numpy(),
                         "low": values.min(axis=1).to_numpy(), "high": values.max(axis=1).to_numpy(),
                         "seeds": values.shape[1]})


def sigma_max_figure(histories: Sequence[tuple[str, Sequence[pd.DataFrame]]], terms: Sequence[str], path: Path,
                     title: str = "", paper_range: tuple[float, float] | None = None) -> Path:
    """sigma_max of the Hessian of each loss in ``terms`` vs training step, over seeds.

    Args:
        histories: per run, its label and one history per seed; each run is drawn as the median
            over its seeds (line) and their min-max range (band; a single seed draws the line only).
        paper_range: the y range of the paper's figure, drawn as two dotted lines in the panel of
            the total loss (the only loss the paper plots).
    """
    colours = sns.color_palette("colorblind", 10)
    with _style(), sns.plotting_context("paper", rc=STYLE):
        fig, axes = _canvas(1, len(terms), width=3.8, height=3.0)
        for ax, term in zip(axes[0], terms):
            for k, (label, frames) in enumerate(histories):
                band = seed_band(frames, f"sigma_max_{term}")
                if not len(band):
                    continue
                n = int(band["seeds"].iloc[0])
                ax.plot(band["step"], band["median"], color=colours[k], linewidth=1.3, marker="o", markersize=2.0,
                        label=f"{label}: median of {n} seeds, band min-max" if n > 1 else label)
                if n > 1:
                    ax.fill_between(band["step"], band["low"], band["high"], color=colours[k], alpha=0.25,
                                    linewidth=0)
            if paper_range is not None and term == "total":
                for level in paper_range:
                    ax.axhline(level, color="0.4", linestyle=":", linewidth=1.0,
                               label="the paper's y-axis range" if level == paper_range[0] else None)
            ax.set_yscale("log")
            _steps_axis(ax)
            ax.set_ylabel("sigma_max of the Hessian")
            ax.set_title(f"Hessian of {LOSS_LABELS.get(term, term)}")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), frameon=False,
                   title=title or None)
        return _save(fig, path)


def spectrum_figure(spectra: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """Every eigenvalue of each loss's Hessian in ascending order (Fig. 4a)."""
    colours = sns.color_palette("colorblind", 10)
    with _style(), sns.plotting_context("paper", rc=STYLE):
        fig, axes = _canvas(1, 1, width=5.0, height=3.4)
        ax = axes[0][0]
        for k, (term, values) in enumerate(spectra.items()):
            ax.plot(np.arange(len(values)), values, color=colours[k], linewidth=1.3,
                    label=f"eigenvalues of the Hessian of {LOSS_LABELS.get(term, term)}")
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_xlabel("index (ascending)")
        ax.set_ylabel("eigenvalue")
        ax.set_title("(a) Hessian spectra at the last step")
        ax.legend(loc="upper left", frameon=False)
        if title:
            fig.suptitle(title, fontsize=10)
        return _save(fig, path)


def losses_figure(history: pd.DataFrame, terms: Sequence[str], path: Path, *, window: int, title: str = "") -> Path:
    """Each loss term at every logged step (thin) and its running median over ``window`` logged steps (thick), Fig. 4b.

    The running median separates the trend from the step-to-step oscillation the paper points at.
    """
    colours = sns.color_palette("colorblind", 10)
    with _style(), sns.plotting_context("paper", rc=STYLE):
        fig, axes = _canvas(1, 1, width=5.0, height=3.4)
        ax = axes[0][0]
        for k, term in enumerate(terms):
            column = f"loss_{term}"
            if column not in history:
                continue
            data = history[["step", column]].dropna()
            symbol = LOSS_LABELS.get(term, term)
            ax.plot(data["step"], data[column], color=colours[k], linewidth=0.7, alpha=0.7, label=symbol)
            trend = data[column].rolling(window, center=True, min_periods=1).median()
            ax.plot(data["step"], trend, color=colours[k], linewidth=2.0,
                    label=f"{symbol}, running median of {window} logged steps")
        ax.set_yscale("log")
        _steps_axis(ax)
        ax.set_ylabel("loss")
        ax.set_title("(b) losses during training")
        ax.legend(frameon=False, fontsize=7)
        if title:
            fig.suptitle(title, fontsize=10)
        return _save(fig, path)
