"""The figures of a campaign report (seaborn on matplotlib's Agg canvas), each saved as PNG and PDF.

Every figure is drawn from the runs table and long history of :func:`gradpath.suite.runs.store.gather`, and, for
the solution fields, from the parameters each run saved (``params.npz``): the network is evaluated
in numpy by the same jets the backends train with (:func:`gradpath.backends.losses.derivatives`), so no
framework is imported. A figure whose data is absent is not drawn; :func:`build_figures` returns a
:class:`Skipped` line for it instead, which the report prints. A field plot is drawn only when the
numpy prediction reproduces the error the run recorded.

Figures (``<kind>-<problem>[-<configuration>].png/.pdf`` under ``results/<campaign>/figures/``):

- ``error-step``: the problem's error metric vs training step, per method, mean and min-max over seeds.
- ``error-time``: the same error vs training seconds, one line per seed.
- ``weights``: the annealed loss weights lambda (M2, M4) vs step (the paper's Figs. 8 and 16).
- ``fields``: exact (or reference), predicted and absolute-error fields of one representative run
  per method (Figs. 1, 6, 10, 14, 15, 17, 18).
- ``table2``: Helmholtz error per architecture and method beside the paper's Table 2.

Figures of an earlier report in the same directory are removed first, so none is ever stale.
"""

from __future__ import annotations

import json
import math
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import (FixedLocator, FuncFormatter, LogFormatterSciNotation, LogLocator, MaxNLocator,
                               NullFormatter, ScalarFormatter)

from gradpath.backends.data import seed_normalisation
from gradpath.backends.losses import derivatives
from gradpath.backends.methods import METHODS
from gradpath.problems import get_problem, problem_class
from gradpath.problems.core import Problem
from gradpath.problems.errors import UsageError
from gradpath.suite.runs.record import CONFIG, DONE, PARAMS, write_json
from gradpath.suite.analysis.tables import BOOKKEEPING, METHOD_ORDER, SETTING_COLUMNS, cell_stats
from gradpath.suite.report.style import DPI, STYLE

METRIC_LABELS = {"rel_l2": "relative L2 error", "rel_spectral": "relative spectral-norm error"}
SHORT_METRIC = {"rel_l2": "rel. L2", "rel_spectral": "rel. spectral"}
DASHES = ("", (4, 1.5), (1, 1), (3, 1.25, 1.5, 1.25))  # line styles of the loss terms (seaborn's first four)
FIELD_LABELS = {"cavity": "speed |u|"}  # problems whose compared field is not their first output
BAND = "mean over seeds (line) and min-max range over seeds (band; seaborn errorbar=('pi', 100))"
# No creation date in the files, so that the same store draws byte-identical figures (a rebuilt report
# changes in git only where its numbers do). PNG: matplotlib writes only a Software key (its version).
PNG_METADATA: dict[str, Any] = {}
PDF_METADATA: dict[str, Any] = {"CreationDate": None}
# how far the error of our numpy prediction may lie from the error the run recorded (float32 vs float64)
REPRODUCE_RTOL, REPRODUCE_ATOL = 1e-2, 1e-5


@dataclass(frozen=True)
class Figure:
    """A figure written to disk: ``name`` is the file stem, ``files`` its PNG and PDF."""

    name: str
    title: str
    caption: str
    files: tuple[Path, ...]

    @property
    def png(self) -> Path:
        return self.files[0]


@dataclass(frozen=True)
class Skipped:
    """A figure that was not drawn, and why."""

    title: str
    reason: str


Result = tuple[list[Figure], list[Skipped]]


# -- data ----------------------------------------------------------------------------------------

def _method_order(methods) -> list[str]:
    present = set(methods)
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def _palette(methods: Sequence[str]) -> dict[str, Any]:
    """Fixed colours per method in every figure (colorblind palette; M2 and M4 far apart)."""
    colours = sns.color_palette("colorblind", 10)
    fixed = dict(zip(METHOD_ORDER, (colours[0], colours[1], colours[2], colours[4])))
    spare = [c for i, c in enumerate(colours) if i not in (0, 1, 2, 4)]
    others = [m for m in methods if m not in fixed]
    return {m: fixed[m] if m in fixed else spare[others.index(m) % len(spare)] for m in methods}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "default"


# settings that do not change the maths a run does (how it is compiled, where it runs, how often it
# logs): figures name them only where nothing else tells two configurations apart


def _configuration_columns(runs: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Columns besides problem, method, seed and ``exclude`` that vary between runs of one problem,
    less the bookkeeping settings that split the runs no further than the other columns do
    (``compile`` where it only follows the backend)."""
    skip = {"problem", "method", "seed", "layers", *exclude}
    columns = [c for c in runs.columns
               if (c == "backend" or c in SETTING_COLUMNS or c.startswith("param_")) and c not in skip]
    columns = [c for c in columns if runs[c].map(_text).nunique() > 1]
    for column in [c for c in columns if c in BOOKKEEPING]:
        rest = [c for c in columns if c != column]
        if _partitions(runs, rest) == _partitions(runs, columns):
            columns = rest
    return columns


def _partitions(runs: pd.DataFrame, columns: Sequence[str]) -> int:
    """How many distinct configurations ``columns`` tell apart among ``runs``."""
    return len({tuple(_text(v) for v in values) for values in runs[list(columns)].itertuples(index=False)}) \
        if columns else 1


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _label(row: pd.Series, columns: Sequence[str]) -> str:
    """``"jax, compile=False"`` / ``"width 50, depth 3"`` for the varying configuration columns."""
    parts = []
    for c in columns:
        value = _text(row[c])
        if c == "backend":
            parts.append(value)
        elif c in ("width", "depth"):
            parts.append(f"{c} {value}")
        else:
            parts.append(f"{c.removeprefix('param_')}={value}")
    return ", ".join(parts)


def _with_configurations(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished (complete or diverged), with a ``configuration`` label per problem."""
    if runs.empty or "status" not in runs:
        return runs.assign(configuration=pd.Series(dtype=object))
    done = runs[runs["status"].isin(DONE)].copy()
    done["configuration"] = ""
    for _, frame in done.groupby("problem", sort=False):
        columns = _configuration_columns(frame)
        done.loc[frame.index, "configuration"] = [_label(row, columns) for _, row in frame.iterrows()]
    return done


def _configurations(frame: pd.DataFrame) -> list[str]:
    """Configuration labels of a problem's runs in a stable, readable order (widths and depths numerically)."""
    def key(label: str):
        return [(0, float(p), "") if re.fullmatch(r"-?\d+(\.\d+)?", p) else (1, 0.0, p)
                for p in re.split(r"[ ,=]+", label)]
    return sorted(frame["configuration"].unique(), key=key)


def _long(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """History rows of finished runs with their problem, method, seed and configuration."""
    if history.empty or "step" not in history:
        return pd.DataFrame()
    keep = runs[["key", "problem", "method", "seed", "configuration", "status"]]
    return history.merge(keep, on="key", how="inner")


def _metric(problem: str) -> str | None:
    try:
        return problem_class(problem).primary_metric
    except UsageError:
        return None


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _metric_label(problem: str, metric: str) -> str:
    field = FIELD_LABELS.get(problem, "u")
    return f"{METRIC_LABELS.get(metric, metric)} of {field}"


def _seed_note(frame: pd.DataFrame, diverged_are: str = "included up to their last finite value") -> str:
    """``"seeds 0-9"``/``"seed 0"``, plus how many runs diverged and what the figure does with them."""
    seeds = sorted({int(s) for s in frame["seed"].dropna()})
    if not seeds:
        text = "no seeds"
    elif len(seeds) == 1:
        text = f"seed {seeds[0]}"
    elif seeds == list(range(seeds[0], seeds[-1] + 1)):
        text = f"seeds {seeds[0]}-{seeds[-1]}"
    else:
        text = "seeds " + ", ".join(map(str, seeds))
    diverged = frame.loc[frame["status"] == "diverged"].drop_duplicates("key")
    if len(diverged):
        text += f"; {len(diverged)} diverged run{'s' if len(diverged) > 1 else ''} {diverged_are}"
    return text


# -- drawing -------------------------------------------------------------------------------------

def figure_grid(panels: int, ncols: int = 3, width: float = 4.0, height: float = 3.0) -> tuple[MplFigure, list]:
    """A figure of ``panels`` axes, ``ncols`` to a row (the unused ones hidden), for every report figure."""
    ncols = 2 if panels == 4 and ncols >= 2 else max(1, min(ncols, panels))
    if panels == 1:  # one panel: wider, so that the legend above it fits
        width, height = 1.4 * width, 1.2 * height
    nrows = math.ceil(panels / ncols)
    fig = MplFigure(figsize=(width * ncols, height * nrows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def save_figure(fig: MplFigure, out: Path, name: str) -> tuple[Path, ...]:
    """``out/name.png`` and ``.pdf`` without dates, so that the same runs draw the same bytes."""
    out.mkdir(parents=True, exist_ok=True)
    files = (out / f"{name}.png", out / f"{name}.pdf")
    fig.draw_without_rendering()  # lay out once (constrained layout is the slow part), then keep it
    fig.set_layout_engine("none")
    fig.savefig(files[0], dpi=DPI, metadata=PNG_METADATA)
    fig.savefig(files[1], metadata=PDF_METADATA)
    return files


def _shared_legend(fig: MplFigure, axes: Sequence, title: str | None = None) -> None:
    """One legend for the figure (above the panels) from the panels' legends, which are removed."""
    handles, labels = {}, []
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            if text not in handles:
                handles[text] = handle
                labels.append(text)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend([handles[text] for text in labels], labels, loc="outside upper center",
                   ncols=_legend_columns(labels, fig.get_figwidth()), title=title, frameon=False)


def _legend_columns(labels: Sequence[str], width: float, char: float = 0.065, handle: float = 0.7) -> int:
    """The most legend columns whose labels (method descriptions are long) fit in ``width`` inches."""
    for ncols in range(len(labels), 1, -1):
        rows = math.ceil(len(labels) / ncols)
        columns = [labels[i * rows:(i + 1) * rows] for i in range(ncols)]  # matplotlib fills column by column
        if sum(max(map(len, c), default=0) * char + handle for c in columns) <= width:
            return ncols
    return 1


# tick values per decade (times a power of ten) for a log axis, coarsest first, each with the fewest
# labels it must put on the axis to be taken: whole decades where three or more show, else finer
# multiples, so that an axis spanning under a decade still shows enough values to read as log
LOG_SUBS = (((1.0,), 3), ((1.0, 2.0, 5.0), 4), ((1.0, 1.5, 2.0, 3.0, 5.0, 7.0), 4),
            ((1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0), 2))


def _log_ticks(lo: float, hi: float, subs: Sequence[float]) -> list[float]:
    """Every ``sub * 10**k`` within ``[lo, hi]``."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    # through text, so that the ticks are exact decimals: 0.3, not 0.30000000000000004
    ticks = [float(f"{sub}e{k}") for k in range(first, last + 1) for sub in subs]
    return [t for t in ticks if lo <= t <= hi]


def _log_label(value: float, plain: bool) -> str:
    """A log tick's label: a plain number (0.05, 1.5, 200) or ``m x 10^k`` in mathtext."""
    if value <= 0 or not math.isfinite(value):
        return ""
    if plain:
        return f"{value:.3g}"
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = round(value / 10 ** exponent, 2)
    return f"$10^{{{exponent}}}$" if mantissa == 1 else f"${mantissa:g}\\times10^{{{exponent}}}$"


def _log_y(ax) -> None:
    """A log y axis labelled at whole decades (10^k) where three or more fall on it, else at 1-2-5
    multiples or finer (:data:`LOG_SUBS`) as plain numbers (or m x 10^k beyond 0.001-9999);
    unlabelled minor ticks at every multiple of each decade."""
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        return
    for level, (subs, needed) in enumerate(LOG_SUBS):
        ticks = _log_ticks(lo, hi, subs)
        if len(ticks) >= needed:
            break
    else:
        level = None
    if level == 0:
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))
        ax.yaxis.set_major_formatter(LogFormatterSciNotation())
    elif level is not None:
        plain = all(1e-3 <= t < 1e4 for t in ticks)  # one style per axis: 0.002 ... 0.05, or 2x10^-4 ... 10^-3
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _log_label(v, plain)))
    else:  # a sliver of one decade: evenly spaced values, still on the log scale
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10), numticks=12))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _thousands(value: float, _pos: Any = None) -> str:
    """A step or seconds tick label: 10k for 10,000, 2.5k for 2,500, 500 for 500."""
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def _count_x(ax, label: str) -> None:
    """An x axis of steps or seconds: at most six round ticks, thousands written as 10k, so that the
    labels never run together."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlabel(label)


def _markers(frame: pd.DataFrame) -> dict[str, Any]:
    """Point markers on the lines when there are few logged steps, so each logged value is visible."""
    return {"marker": "o", "markersize": 3.5, "markeredgewidth": 0} if frame["step"].nunique() <= 12 else {}


def _style():
    return sns.axes_style("whitegrid", {"grid.linestyle": ":"})


SHORT_METHODS = {"M1": "plain PINN", "M2": "loss-weight annealing", "M3": "gated network", "M4": "annealing + gated"}


def _method_legend_label(method: str) -> str:
    return f"{method}: {SHORT_METHODS[method]}" if method in SHORT_METHODS else method


# -- 1 and 2: error vs step and vs time -----------------------------------------------------------

def _error_curves(runs: pd.DataFrame, history: pd.DataFrame, out: Path, x: str) -> Result:
    kind = "error-step" if x == "step" else "error-time"
    what = "Error vs training step" if x == "step" else "Error vs training time"
    runs = _with_configurations(runs)
    data = _long(runs, history)
    figures, skipped = [], []
    if data.empty:
        return [], [Skipped(what, "no finished run has a history")]
    for problem, frame in data.groupby("problem", sort=True):
        metric = _metric(problem)
        if metric is None or metric not in frame or x not in frame:
            skipped.append(Skipped(f"{what}: {problem}", f"the history has no {metric or 'metric'} or {x} column"))
            continue
        frame = frame[np.isfinite(frame[metric]) & (frame[metric] > 0)]
        if frame.empty:
            skipped.append(Skipped(f"{what}: {problem}", "no finite error was logged"))
            continue
        methods = _method_order(frame["method"])
        palette = _palette(methods)
        configurations = _configurations(frame)
        with _style(), sns.plotting_context("paper", rc=STYLE):
            fig, axes = figure_grid(len(configurations))
            for ax, configuration in zip(axes, configurations):
                part = frame[frame["configuration"] == configuration]
                part = part.assign(method=part["method"].map(_method_legend_label))
                hue_order = [_method_legend_label(m) for m in methods if m in set(frame["method"])]
                colours = {_method_legend_label(m): palette[m] for m in methods}
                if x == "step":
                    sns.lineplot(part, x=x, y=metric, hue="method", hue_order=hue_order, palette=colours,
                                 estimator="mean", errorbar=("pi", 100), ax=ax, linewidth=1.4, **_markers(part))
                    _count_x(ax, "training step")
                else:
                    sns.lineplot(part, x=x, y=metric, hue="method", hue_order=hue_order, palette=colours,
                                 units="seed", estimator=None, ax=ax, linewidth=1.0, alpha=0.8, **_markers(part))
                    _count_x(ax, "training time (s)")
                _log_y(ax)
                ax.set_ylabel(_metric_label(problem, metric))
                n = part.groupby("method")["seed"].nunique()
                seeds = f"{n.max()} seed{'s' if n.max() > 1 else ''}" if n.min() == n.max() else \
                    "seeds " + ", ".join(f"{m.split(':')[0]} {v}" for m, v in n.items())
                ax.set_title(f"{problem}" + (f" ({configuration})" if configuration else "") + f": {seeds}")
            _shared_legend(fig, axes)
            name = f"{kind}-{_slug(problem)}"
            files = save_figure(fig, out, name)
        test = problem_class(problem).test_points_per_axis
        dims = len(problem_class(problem).inputs)
        grid = (f"{test}-point" if dims == 1 else " x ".join([str(test)] * dims) + "-point") + " test grid"
        if x == "step":
            caption = (f"{_cap(_metric_label(problem, metric))} on the {grid} vs training step, {problem}, one panel "
                       f"per configuration; {BAND}; {_seed_note(frame)}.")
        else:
            caption = (f"{_cap(_metric_label(problem, metric))} on the {grid} vs training seconds (the history's "
                       f"`seconds`: compilation and evaluation excluded; runs that shared the machine include that "
                       f"contention), {problem}, one line per seed; {_seed_note(frame)}.")
        figures.append(Figure(name, f"{what}: {problem}", caption, files))
    return figures, skipped


def error_vs_step(runs: pd.DataFrame, history: pd.DataFrame, out: Path, store_root: Path) -> Result:
    """The primary error vs step per method, mean and min-max band over seeds; one figure per problem."""
    return _error_curves(runs, history, out, "step")


def error_vs_time(runs: pd.DataFrame, history: pd.DataFrame, out: Path, store_root: Path) -> Result:
    """The primary error vs training seconds per method, one line per seed; one figure per problem."""
    return _error_curves(runs, history, out, "seconds")


# -- 3: loss weights -------------------------------------------------------------------------------

def loss_weights(runs: pd.DataFrame, history: pd.DataFrame, out: Path, store_root: Path) -> Result:
    """lambda_i vs step for the annealing methods (M2, M4), mean and min-max band over seeds (Figs. 8, 16)."""
    what = "Loss weights"
    runs = _with_configurations(runs)
    annealing = [m for m in runs.get("method", pd.Series(dtype=object)).unique() if m in METHODS and METHODS[m].anneal]
    data = _long(runs[runs["method"].isin(annealing)] if annealing else runs.iloc[:0], history)
    if data.empty:
        return [], [Skipped(what, "no finished run of an annealing method (M2, M4) has a history")]
    figures, skipped = [], []
    for problem, frame in data.groupby("problem", sort=True):
        columns = [c for c in frame.columns if c.startswith("weight_") and frame[c].notna().any()]
        moving = [c for c in columns if (frame[c].dropna() != 1.0).any()]
        fixed = [c.removeprefix("weight_") for c in columns if c not in moving]
        if not moving:
            skipped.append(Skipped(f"{what}: {problem}", "no logged loss weight differs from 1"))
            continue
        long = frame.melt(id_vars=["step", "method", "seed", "configuration", "status", "key"], value_vars=moving,
                          var_name="term", value_name="weight")
        long["term"] = long["term"].str.removeprefix("weight_")
        long = long[np.isfinite(long["weight"]) & (long["weight"] > 0)]
        methods = _method_order(long["method"])
        palette = _palette(methods)
        configurations = _configurations(long)
        terms = [c.removeprefix("weight_") for c in moving]
        dashes = {term: DASHES[i % len(DASHES)] for i, term in enumerate(terms)}
        with _style(), sns.plotting_context("paper", rc=STYLE):
            fig, axes = figure_grid(len(configurations))
            for ax, configuration in zip(axes, configurations):
                part = long[long["configuration"] == configuration]
                several = len(terms) > 1
                sns.lineplot(part, x="step", y="weight", hue="method", hue_order=methods, palette=palette,
                             style="term" if several else None, style_order=terms if several else None,
                             dashes=dashes if several else True, estimator="mean", errorbar=("pi", 100), ax=ax,
                             linewidth=1.4, legend=False, **_markers(part))
                _log_y(ax)
                _count_x(ax, "training step")
                ax.set_ylabel(r"loss weight $\lambda$" + (f" ({terms[0]})" if len(terms) == 1 else ""))
                n = part.groupby("method")["seed"].nunique()
                ax.set_title(f"{problem}" + (f" ({configuration})" if configuration else "")
                             + f": {n.max()} seed{'s' if n.max() > 1 else ''}")
            handles = [Line2D([], [], color=palette[m], linewidth=1.4, label=_method_legend_label(m)) for m in methods]
            if len(terms) > 1:
                handles += [Line2D([], [], color="0.3", linewidth=1.4, dashes=dashes[term] or (None, None),
                                   label=f"λ of the {term} term") for term in terms]
            fig.legend(handles=handles, loc="outside upper center", frameon=False,
                       ncols=_legend_columns([h.get_label() for h in handles], fig.get_figwidth()))
            name = f"weights-{_slug(problem)}"
            files = save_figure(fig, out, name)
        caption = (f"Loss weights λ of the {', '.join(terms)} term{'s' if len(terms) > 1 else ''} vs training step "
                   f"(the value in force after the logged step), {problem}, annealing methods "
                   f"{', '.join(methods)}; {BAND}; {_seed_note(long)}"
                   + (f"; the {', '.join(fixed)} weight stays 1 and is not shown" if fixed else "") + ".")
        figures.append(Figure(name, f"{what} λ: {problem}", caption, files))
    return figures, skipped


# -- 4: solution fields ----------------------------------------------------------------------------

def run_prediction(run_dir: str | Path) -> tuple[Problem, np.ndarray, np.ndarray, dict[str, Any]]:
    """The solution field a stored run's network predicts on its problem's test grid, in numpy (float64).

    Returns:
        ``(problem, x, prediction, notes)``: ``x`` the ``(N, d)`` test grid, ``prediction`` ``(N,)``,
        ``notes["normalisation"]`` says whether ``norm_mu``/``norm_sigma`` came from params.npz or were
        recomputed from the seed (records written before they were saved).

    Raises:
        OSError, ValueError, KeyError, UsageError, zipfile.BadZipFile: the record is missing,
            unreadable or incomplete.
    """
    run_dir = Path(run_dir)
    config = json.loads((run_dir / CONFIG).read_text())
    settings = config["settings"]
    problem = get_problem(config["problem"], **config.get("parameters", {}))
    with np.load(run_dir / PARAMS) as saved:
        arrays = {k: np.asarray(saved[k], dtype=np.float64) for k in saved.files}
    if "norm_mu" in arrays and "norm_sigma" in arrays:
        mu, sigma, source = arrays["norm_mu"], arrays["norm_sigma"], "params.npz"
    else:  # the training loop draws them from the seed's own stream; recompute them the same way
        mu, sigma = seed_normalisation(problem, int(settings["seed"]))
        source = "recomputed from the seed"
    params = {k: v for k, v in arrays.items() if k[0] in "WbEc" and k[1:].isdigit()}
    x = problem.test_grid()
    d = derivatives(np, problem, params, x, mu, sigma, tuple(problem.solution_needs),
                    net=METHODS[settings["method"]].net, gate=settings.get("gate", "code"))
    return problem, x, np.asarray(problem.solution(np, x, d), dtype=np.float64), {"normalisation": source}


def _representative(frame: pd.DataFrame) -> pd.Series | None:
    """The complete run with the median final error (the lower median for an even count)."""
    error = pd.to_numeric(frame.get("error"), errors="coerce")
    ok = frame[(frame["status"] == "complete") & np.isfinite(error)]
    if ok.empty:
        return None
    ok = ok.assign(_e=pd.to_numeric(ok["error"])).sort_values(["_e", "seed"])
    return ok.iloc[(len(ok) - 1) // 2]


def _colourbar(fig: MplFigure, image, ax, *, extend: str = "neither") -> None:
    bar = fig.colorbar(image, ax=ax, shrink=0.85, pad=0.02, extend=extend)
    formatter = ScalarFormatter(useMathText=True)
    formatter.set_powerlimits((-2, 3))
    bar.formatter = formatter
    bar.ax.tick_params(labelsize=7)
    bar.ax.yaxis.get_offset_text().set_fontsize(7)
    bar.update_ticks()


def _field_panels(problem: Problem, x: np.ndarray, ref: np.ndarray, rows: list[dict[str, Any]],
                  palette: dict[str, Any], title: str) -> MplFigure:
    field = FIELD_LABELS.get(problem.name, problem.solution_needs[0])
    truth = "reference" if problem.exact(np, x[:1]) is None else "exact"
    if len(problem.inputs) == 1:
        fig, axes = figure_grid(2, ncols=2, width=4.6, height=3.2)
        order = np.argsort(x[:, 0])
        axes[0].plot(x[order, 0], ref[order], color="black", linewidth=2.4, alpha=0.35, label=truth)
        for row in rows:
            axes[0].plot(x[order, 0], row["pred"][order], color=palette[row["method"]], linewidth=1.1,
                         linestyle="--", label=f"{row['method']} (seed {row['seed']})")
            axes[1].plot(x[order, 0], np.abs(row["pred"] - ref)[order], color=palette[row["method"]], linewidth=1.1,
                         label=f"{row['method']} (seed {row['seed']})")
        axes[0].set(xlabel=problem.inputs[0], ylabel=field, title=f"{truth} and predicted {field}")
        axes[1].set(xlabel=problem.inputs[0], ylabel=f"|predicted - {truth}|", title="absolute error")
        _log_y(axes[1])
        axes[0].legend(loc="best", frameon=True)
        fig.suptitle(title, fontsize=10)
        return fig
    n = problem.test_points_per_axis
    lo, hi = problem.domain.lo, problem.domain.hi
    extent = (lo[0], hi[0], lo[1], hi[1])

    def grid(values: np.ndarray) -> np.ndarray:  # test grid is ij-indexed: [i, j] = (x_i, y_j)
        return values.reshape(n, n).T

    columns = 1 + len(rows)
    fig = MplFigure(figsize=(3.3 * columns, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, columns, squeeze=False)
    vmin, vmax = float(ref.min()), float(ref.max())
    for col, (v, name) in enumerate([(ref, f"{truth} {field}")]
                                    + [(r["pred"], f"{r['method']} predicted (seed {r['seed']})") for r in rows]):
        ax = axes[0, col]
        image = ax.imshow(grid(v), origin="lower", extent=extent, vmin=vmin, vmax=vmax, cmap="viridis",
                          interpolation="nearest")
        below, above = bool(v.min() < vmin - 1e-12), bool(v.max() > vmax + 1e-12)
        ax.set_title(name)
        _colourbar(fig, image, ax, extend={(False, False): "neither", (True, False): "min", (False, True): "max",
                                           (True, True): "both"}[below, above])
    for col, row in enumerate(rows, start=1):
        ax = axes[1, col]
        err = np.abs(row["pred"] - ref)
        im = ax.imshow(grid(err), origin="lower", extent=extent, cmap="magma", interpolation="nearest")
        ax.set_title(f"{row['method']} |error|; {SHORT_METRIC.get(row['metric'], row['metric'])} {row['error']:.2e}")
        _colourbar(fig, im, ax)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.0, 0.95, f"top: {truth} and predicted {field},\nall on the {truth} field's colour\nscale "
                    f"(arrow ends: values\nbeyond it, shown saturated)\n\nbottom: |predicted - {truth}|,\neach on "
                    f"its own scale\n\none run per method: the seed\nwith the median final error",
                    transform=axes[1, 0].transAxes, va="top", fontsize=8)
    for ax in axes.ravel():
        if ax.axison:
            ax.set_xlabel(problem.inputs[0])
            ax.set_ylabel(problem.inputs[1])
            ax.grid(False)
    fig.suptitle(title, fontsize=10)
    return fig


def solution_fields(runs: pd.DataFrame, history: pd.DataFrame, out: Path, store_root: Path) -> Result:
    """Exact, predicted and absolute-error fields of the median-error run per method, per configuration."""
    what = "Solution fields"
    runs = _with_configurations(runs)
    if runs.empty:
        return [], [Skipped(what, "no finished run")]
    figures, skipped = [], []
    for problem_name, frame in runs.groupby("problem", sort=True):
        for configuration in _configurations(frame):
            part = frame[frame["configuration"] == configuration]
            label = problem_name + (f" ({configuration})" if configuration else "")
            name = f"fields-{_slug(problem_name)}" + (f"-{_slug(configuration)}" if configuration else "")
            rows, problem, x, ref, notes, restored = [], None, None, None, set(), {}
            methods = _method_order(part["method"])
            for method in methods:
                chosen = _representative(part[part["method"] == method])
                if chosen is None:
                    skipped.append(Skipped(f"{what}: {label}, {method}", "no complete run with a finite error"))
                    continue
                if isinstance(chosen.get("restored_from"), str):  # gradpath.suite.runs.restore: no params.npz to draw from
                    restored[method] = chosen
                    continue
                try:
                    problem, x, pred, note = run_prediction(Path(store_root) / chosen["name"])
                except (OSError, ValueError, KeyError, UsageError, zipfile.BadZipFile) as exc:
                    skipped.append(Skipped(f"{what}: {label}, {method}",
                                           f"run `{chosen['name']}` cannot be evaluated ({type(exc).__name__}: {exc})"))
                    continue
                if ref is None:
                    ref = problem.reference(x)
                metric = problem.primary_metric
                ours = problem.metrics(pred, ref)[metric]
                recorded = float(chosen["error"])
                if not abs(ours - recorded) <= REPRODUCE_RTOL * recorded + REPRODUCE_ATOL:
                    skipped.append(Skipped(f"{what}: {label}, {method}",
                                           f"the prediction from `{chosen['name']}/params.npz` gives {metric} "
                                           f"{ours:.4g}, but the run recorded {recorded:.4g}; not drawn"))
                    continue
                notes.add(note["normalisation"])
                n_ok = int(((part["method"] == method) & (part["status"] == "complete")).sum())
                rows.append({"method": method, "seed": int(chosen["seed"]), "pred": pred, "error": ours,
                             "metric": metric, "n": n_ok, "name": chosen["name"]})
            if restored:
                kept, missed = _kept_fields(out, name, f"{what}: {label}", restored, drawable=bool(rows))
                figures += kept
                skipped += missed
            if not rows:
                continue
            palette = _palette(methods)
            with _style(), sns.plotting_context("paper", rc=STYLE):
                fig = _field_panels(problem, x, ref, rows, palette, label)
                files = save_figure(fig, out, name)
            truth = "reference (finite-difference solution)" if problem.exact(np, x[:1]) is None else "exact solution"
            field = FIELD_LABELS.get(problem_name, problem.solution_needs[0])
            picks = "; ".join(f"{r['method']}: seed {r['seed']} of {r['n']}" for r in rows)
            points = problem.test_points_per_axis
            grid = f"{points}-point" if len(problem.inputs) == 1 else f"{points} x {points}-point"
            caption = (f"{truth[0].upper() + truth[1:]}, predicted {field} and |predicted - {truth.split()[0]}| on "
                       f"the {grid} test grid, {label}; one run per method, the "
                       f"complete run with the median final {METRIC_LABELS.get(rows[0]['metric'], rows[0]['metric'])} "
                       f"(lower median for an even count) ({picks}); predictions evaluated in numpy from each run's "
                       f"params.npz and checked against the error the run recorded; predicted fields use the "
                       f"{truth.split()[0]} field's colour scale, values beyond it saturate (arrow ends of the "
                       f"colour bar)"
                       + ("; input normalisation recomputed from the seed (older records)"
                          if "recomputed from the seed" in notes else "") + ".")
            figures.append(Figure(name, f"{what}: {label}", caption, files))
            # what was drawn, so that a later build whose runs were restored without parameters can keep it
            write_json(out / f"{name}{DRAWN}", {"runs": {r["method"]: r["name"] for r in rows}, "caption": caption})
    return figures, skipped


DRAWN = ".drawn.json"  # beside a solution-field figure: the runs it shows and its caption


def _kept_fields(out: Path, name: str, title: str, restored: dict[str, pd.Series], drawable: bool) -> Result:
    """The solution-field figure an earlier build drew, when its median runs are now restored records
    (:mod:`gradpath.suite.runs.restore`, no params.npz): kept as drawn if it shows exactly those runs, else skipped."""
    def why(method: str, run: pd.Series, more: str) -> Skipped:
        return Skipped(f"{title}, {method}", f"its median run `{run['name']}` was restored from "
                                             f"`{run['restored_from']}`, which keeps no parameters{more}")
    wanted = {method: run["name"] for method, run in restored.items()}
    # its own name first; then any figure of exactly these runs (a configuration's label, and so the
    # file name, changes when another backend's runs join the problem)
    for sidecar in [out / f"{name}{DRAWN}", *sorted(out.glob(f"*{DRAWN}"))]:
        try:
            drawn = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        stem = sidecar.name[:-len(DRAWN)]
        files = (out / f"{stem}.png", out / f"{stem}.pdf")
        if isinstance(drawn, dict) and drawn.get("runs") == wanted and all(f.is_file() for f in files):
            break
    else:
        drawn = None
    if drawable or drawn is None:
        more = "" if drawable else "; no earlier figure of exactly these runs to keep"
        return [], [why(method, run, more) for method, run in restored.items()]
    caption = (f"{drawn['caption'].rstrip('.')}. Drawn by an earlier build of this report: these runs are "
               f"now restored records without parameters (`gradpath restore`), so the figure is kept as drawn")
    return [Figure(stem, title, caption + ".", files)], []


# -- 5: Table 2 -------------------------------------------------------------------------------------

def table2_architectures(runs: pd.DataFrame, history: pd.DataFrame, out: Path, store_root: Path) -> Result:
    """Helmholtz mean error per (width x depth, method) as grouped bars, seeds as dots, the paper's Table 2 marked."""
    what = "Table 2 (Helmholtz architectures)"
    done = runs[(runs.get("problem") == "helmholtz") & runs["status"].isin(DONE)] if len(runs) else runs
    if done.empty:
        return [], [Skipped(what, "the campaign has no finished Helmholtz run")]
    cells = cell_stats(done)
    arch_keys = ["width", "depth"]
    others = [c for c in _configuration_columns(done, exclude=arch_keys) if c in cells]
    groups = cells.groupby(others, dropna=False, sort=True) if others else [((), cells)]
    figures, skipped = [], []
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        configuration = ", ".join(f"{c.removeprefix('param_')}={_text(v)}" for c, v in zip(others, values))
        label = "helmholtz" + (f" ({configuration})" if configuration else "")
        group = group[group["n"] > 0]
        archs = sorted({(int(w), int(d)) for w, d in zip(group["width"], group["depth"])})
        if len(archs) < 2:
            skipped.append(Skipped(f"{what}: {label}", f"runs at {len(archs)} architecture(s); the figure needs "
                                                        "two or more"))
            continue
        methods = _method_order(group["method"])
        palette = _palette(methods)
        mine = done
        for c, v in zip(others, values):
            mine = mine[mine[c].map(_text) == _text(v)]
        slot = 0.8 / len(methods)
        with _style(), sns.plotting_context("paper", rc=STYLE):
            fig = MplFigure(figsize=(min(13.0, max(6.5, 0.26 * len(archs) * len(methods) + 3.5)), 4.2),
                            layout="constrained")
            FigureCanvasAgg(fig)
            ax = fig.subplots()
            has_paper = False
            for i in range(len(archs)):
                if i % 2:
                    ax.axvspan(i - 0.5, i + 0.5, color="0.93", zorder=0, linewidth=0)
            for j, method in enumerate(methods):
                for i, (w, d) in enumerate(archs):
                    pos = i - 0.4 + slot * (j + 0.5)
                    cell = group[(group["method"] == method) & (group["width"] == w) & (group["depth"] == d)]
                    if cell.empty:
                        continue
                    cell = cell.iloc[0]
                    seeds = mine[(mine["method"] == method) & (mine["width"] == w) & (mine["depth"] == d)
                                 & (mine["status"] == "complete")]
                    errs = pd.to_numeric(seeds["error"], errors="coerce").dropna()
                    errs = np.sort(errs[errs > 0].to_numpy())
                    ax.scatter(pos + np.linspace(-0.22, 0.22, len(errs)) * slot if len(errs) > 1 else [pos] * len(errs),
                               errs, s=9, color=palette[method], alpha=0.55, zorder=3, linewidths=0)
                    ax.hlines(cell["mean"], pos - 0.42 * slot, pos + 0.42 * slot, color=palette[method], linewidth=2.6,
                              zorder=4)
                    if np.isfinite(cell["paper"]):
                        has_paper = True
                        ax.scatter([pos], [cell["paper"]], marker="D", s=30, facecolor="white", edgecolor="black",
                                   linewidths=1.2, zorder=5)
            ax.set_xticks(range(len(archs)), [f"{w} x {d}" for w, d in archs])
            ax.set_xlim(-0.5, len(archs) - 0.5)
            ax.grid(axis="x", visible=False)
            ax.set_xlabel("hidden width x hidden layers")
            ax.set_ylabel(_metric_label("helmholtz", "rel_l2"))
            _log_y(ax)
            ax.set_title(f"{label}: ours beside the paper's Table 2")
            handles = [Line2D([], [], color=palette[m], linewidth=2.6, label=f"{m}: ours, mean over seeds")
                       for m in methods]
            handles.append(Line2D([], [], marker="o", linestyle="", color="0.4", alpha=0.55, markersize=3.5,
                                  label="ours, one seed (method's colour)"))
            if has_paper:
                handles.append(Line2D([], [], marker="D", linestyle="", markerfacecolor="white",
                                      markeredgecolor="black", markersize=5, label="paper (Table 2)"))
            fig.legend(handles=handles, loc="outside right upper", frameon=False)
            name = "table2" + (f"-{_slug(configuration)}" if configuration else "")
            files = save_figure(fig, out, name)
        steps = sorted({_text(s) for s in mine.get("steps", pd.Series(dtype=float)).dropna()})
        caption = (f"Relative L2 error of u, {label}, per architecture and method: thick line = mean over complete "
                   f"runs (as in table2.md), dots = individual seeds ({_seed_note(mine, 'left out, as in the tables')})"
                   + ("; white diamonds = the paper's Table 2 value" if has_paper else
                      "; the paper reports no value for these settings")
                   + (f"; our runs have {', '.join(steps)} steps" if steps else "") + ".")
        figures.append(Figure(name, f"{what}: {label}", caption, files))
    return figures, skipped


# -- all -------------------------------------------------------------------------------------------

FigureFunction = Callable[[pd.DataFrame, pd.DataFrame, Path, Path], Result]
FIGURES: list[FigureFunction] = [error_vs_step, error_vs_time, loss_weights, solution_fields, table2_architectures]


def build_figures(runs: pd.DataFrame, history: pd.DataFrame, out: str | Path, store_root: str | Path,
                  figures: Sequence[FigureFunction] = FIGURES) -> Result:
    """Draw every figure into ``out`` (created); then remove the PNG, PDF and ``.drawn.json`` files
    there that no figure of this build drew or kept (:func:`_kept_fields` keeps some of an earlier build's).

    A figure function that raises is reported as skipped with its error (and warned about), so the
    rest of the report is still written.
    """
    out = Path(out)
    if runs.empty or not {"problem", "method", "seed", "status", "key", "name"} <= set(runs.columns):
        drawn, skipped = [], [Skipped("All figures", "the campaign has no run yet")]
    else:
        drawn, skipped = _draw(runs, history, out, Path(store_root), figures)
    if out.is_dir():
        claimed = {path for figure in drawn for path in (*figure.files, out / f"{figure.name}{DRAWN}")}
        for old in [*out.glob("*.png"), *out.glob("*.pdf"), *out.glob(f"*{DRAWN}")]:
            if old not in claimed:
                old.unlink()
    return drawn, skipped


def _draw(runs: pd.DataFrame, history: pd.DataFrame, out: Path, store_root: Path,
          figures: Sequence[FigureFunction]) -> Result:
    drawn, skipped = [], []
    for figure in figures:
        try:
            made, missed = figure(runs, history, out, store_root)
        except Exception as exc:  # one broken figure must not cost the report
            warnings.warn(f"figure {figure.__name__} failed: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
            made, missed = [], [Skipped(figure.__name__, f"failed: {type(exc).__name__}: {exc}")]
        drawn += made
        skipped += missed
    return drawn, skipped
