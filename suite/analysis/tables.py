"""The paper's tables from a runs table (:func:`gradpath.suite.runs.store.runs_table`), with the paper's numbers beside ours.

A *cell* is every run with the same configuration except the seed. Per cell: ``n`` (complete runs
with a finite error), ``runs``, ``diverged`` (loss became non-finite, or a non-finite final error),
``failed`` (the run crashed, or its record is damaged), ``incomplete`` (missing, killed or
interrupted); over the n final errors, the paper's statistic ``mean`` and ``std`` (ddof 1), then the
statistics of :mod:`gradpath.suite.analysis.statistics` that survive heavy tails: ``median`` and ``geomean`` (geometric
mean) with 95% bootstrap intervals, ``failures`` and ``failure_rate`` (seeds ending above 10x the
cell's median) with a Wilson interval, ``stats_note`` where something is not computable (one seed,
no seed). Beside the paper's value (``paper``, a mean of ``paper_runs`` runs): ``ratio`` = mean /
paper, the consistency test of :func:`gradpath.suite.analysis.statistics.paper_consistency` (``paper_verdict``,
``paper_factor_low``/``_high``, ``paper_p``, ``paper_q``: Benjamini-Hochberg over the cells of one
campaign), and ``improvement`` = mean of M1 / mean of this method in the same row.
Diverged runs are left out of the statistics and counted beside them, never dropped silently.

Tables: ``table2`` (Helmholtz, rows width x depth), ``table3`` (Klein-Gordon), ``cavity`` (rows:
form); any other problem gets a table of its own. Every configuration column that varies within a
table (backend, steps, a parameter, ...) becomes a row key too, so different configurations are
never averaged together.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from gradpath.backends.settings import TrainSettings
from gradpath.problems import problem_class
from gradpath.suite.runs.record import DONE
from gradpath.suite.analysis.statistics import adjust_pvalues, cell_summary, paper_consistency

PAPER_STEPS = 40001
PAPER_METRIC = {"rel_l2": "rel_l2_u", "rel_spectral": "rel_l2_speed_spectral"}  # ours -> the paper csv's
PAPER_TIME = "train_seconds_40k_laptop_cpu"
PAPER_FORMS = {"stream_function": "psi-p", "velocity_pressure": "u-v-p"}
METHOD_ORDER = ("M1", "M2", "M3", "M4")
SETTING_COLUMNS = (*TrainSettings.__dataclass_fields__, "layers")
DONE_BAD = ("failed", "corrupt")


@dataclass(frozen=True)
class TableSpec:
    """A table: its file name, the problem it shows, a title and the columns that name its rows."""

    name: str
    problem: str
    title: str
    rows: tuple[str, ...]


TABLES = (
    TableSpec("table2", "helmholtz", "Table 2: Helmholtz (a1 = 1, a2 = 4), relative L2 error of u", ("width", "depth")),
    TableSpec("table3", "klein-gordon", "Table 3: Klein-Gordon, relative L2 error of u", ("width", "depth")),
    TableSpec("cavity", "cavity", "Lid-driven cavity, Re = 100 (Figs. 17-18): spectral-norm error of |u|",
              ("param_form",)),
)
# settings that never change what a run computes, only how it is run: never part of a cell's label
BOOKKEEPING = ("compile", "device", "log_every")


def paper_results() -> pd.DataFrame:
    """Every number the paper reports (``suite/data/paper_results.csv``), with registry problem names
    and a ``parameters`` dict parsed from its ``setting`` column."""
    text = resources.files("gradpath.suite").joinpath("data", "paper_results.csv").read_text()
    paper = pd.read_csv(io.StringIO(text), comment="#")
    paper["problem"] = paper["problem"].str.replace("_", "-")
    paper["parameters"] = paper["setting"].map(_parse_setting)
    return paper


def _parse_setting(text: str) -> dict[str, object]:
    """``"a1=1,a2=4,k=1"`` -> {a1: 1.0, ...}; ``"stream_function Re=100"`` -> {form: psi-p, Re: 100.0}."""
    params: dict[str, object] = {}
    for part in re.split(r"[ ,]+", text.strip()):
        key, sep, value = part.partition("=")
        if sep:
            params[key] = float(value)
        elif part in PAPER_FORMS:
            params["form"] = PAPER_FORMS[part]
    return params


def is_missing(value: object) -> bool:
    """None, or NaN (how a table stores a None)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def same_value(a: object, b: object) -> bool:
    """Equal as settings or parameters: missing equals missing, numbers compare by value (1 == 1.0)."""
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    numbers = (int, float, np.number)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b))
    return a == b


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that define a run's configuration: problem, backend, every setting and problem parameter."""
    return [c for c in frame.columns
            if c in ("problem", "backend") or c in SETTING_COLUMNS or c.startswith("param_")]


def _finished(group: pd.DataFrame) -> pd.Series:
    """A mask of the runs that count: complete, with a finite final error."""
    error = pd.to_numeric(group["error"], errors="coerce") if "error" in group else pd.Series(np.nan, group.index)
    return (group["status"] == "complete") & np.isfinite(error)


def seed_errors(group: pd.DataFrame) -> pd.Series:
    """The final errors of a cell's complete runs with a finite error, indexed by seed (in seed order)."""
    ok = _finished(group)
    if not ok.any():  # also where no run has an error column yet (a store of unfinished runs)
        return pd.Series([], index=pd.Index([], name="seed"), name="error", dtype=float)
    error = pd.to_numeric(group.loc[ok, "error"], errors="coerce")
    # sorted by seed: the bootstrap resamples by position, so the row order of the store must not matter
    return pd.Series(error.to_numpy(float), index=pd.Index(group.loc[ok, "seed"].to_numpy(), name="seed"),
                     name="error").sort_index(kind="stable")


def _stats(group: pd.DataFrame) -> dict[str, object]:
    status = group["status"]
    done = _finished(group)
    ms = pd.to_numeric(group.get("ms_per_step", pd.Series(dtype=float)), errors="coerce")[done]
    ms_median = float(ms.median()) if len(ms.dropna()) else math.nan
    summary = cell_summary(seed_errors(group).to_numpy())
    diverged = int((status == "diverged").sum() + ((status == "complete") & ~done).sum())
    failed = int(status.isin(DONE_BAD).sum())
    if summary["n"] == 0 and (diverged or failed):  # say why nothing is computable, not just that
        summary["stats_note"] = "every run " + " or ".join(
            f"{word} ({count})" for word, count in (("diverged", diverged), ("failed", failed)) if count)
    return {"runs": len(group), "diverged": diverged, "failed": failed,
            "incomplete": int((~status.isin((*DONE, *DONE_BAD))).sum()), **summary,
            "ms_per_step": ms_median, "seconds_40k": ms_median * PAPER_STEPS / 1e3}


def _paper_row(paper: pd.DataFrame, cell: pd.Series, metric: str | None) -> pd.Series | None:
    """The paper's row for ``cell`` and ``metric`` (None where the paper has no such number)."""
    if metric is None:
        return None
    rows = paper[(paper["problem"] == cell["problem"]) & (paper["metric"] == metric)
                 & (paper["method"] == cell.get("method")) & (paper["width"] == cell.get("width"))
                 & (paper["depth"] == cell.get("depth"))]
    for _, row in rows.iterrows():
        if all(same_value(cell.get(f"param_{k}"), v) for k, v in row["parameters"].items()):
            return row
    return None


def _paper_value(paper: pd.DataFrame, cell: pd.Series, metric: str | None) -> float:
    row = _paper_row(paper, cell, metric)
    return math.nan if row is None else float(row["value"])


def _paper_runs(paper: pd.DataFrame, cell: pd.Series, metric: str | None) -> float:
    """How many runs the paper's value is a mean of (1 for its single-run figures)."""
    row = _paper_row(paper, cell, metric)
    return math.nan if row is None or pd.isna(row.get("runs")) else float(row["runs"])


def cell_groups(runs: pd.DataFrame) -> Iterator[tuple[dict[str, object], pd.DataFrame]]:
    """Each cell's configuration (every config column but the seed; columns a problem leaves empty
    are left out) and its runs, problem by problem in the order the runs come."""
    for _, frame in runs.groupby("problem", sort=False):
        frame = frame.drop(columns=[c for c in config_columns(frame) if frame[c].isna().all()])
        keys = [c for c in config_columns(frame) if c != "seed"]
        for values, group in frame.groupby(keys, dropna=False, sort=False):
            yield dict(zip(keys, values)), group


def cell_id(cell: dict[str, object]) -> str:
    """A cell's name as text: every configuration value but the seed, e.g. ``problem=helmholtz|backend=jax|...``."""
    return "|".join(f"{k}={'' if is_missing(v) else v}" for k, v in cell.items())


def errors_by_cell(runs: pd.DataFrame) -> dict[str, pd.Series]:
    """Each cell's final errors by seed (:func:`seed_errors`), keyed by :func:`cell_id`, the index of
    :func:`cell_stats`' rows, so that a comparison can pair two cells' seeds."""
    return {cell_id(cell): seed_errors(group) for cell, group in cell_groups(runs)}


def cell_stats(runs: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell (configuration without the seed), indexed by :func:`cell_id`: the statistics
    above, the paper's value, the consistency test and ratios."""
    paper = paper_results() if paper is None else paper
    groups = list(cell_groups(runs))
    out = pd.DataFrame([{**cell, "metric": problem_class(cell["problem"]).primary_metric, **_stats(group)}
                        for cell, group in groups],
                       index=pd.Index([cell_id(cell) for cell, _ in groups], name="cell"))
    if out.empty:
        return out
    out["paper"] = [_paper_value(paper, c, PAPER_METRIC.get(c["metric"])) for _, c in out.iterrows()]
    out["paper_runs"] = [_paper_runs(paper, c, PAPER_METRIC.get(c["metric"])) for _, c in out.iterrows()]
    out["paper_seconds_40k"] = [_paper_value(paper, c, PAPER_TIME) for _, c in out.iterrows()]
    params = sorted(c for c in out if c.startswith("param_"))
    config = [c for c in config_columns(out) if c not in params]
    out = out[config + params + [c for c in out if c not in config and c not in params]]
    out["ratio"] = out["mean"] / out["paper"]
    tests = [paper_consistency(seed_errors(group).to_numpy(), paper_value,
                               int(runs_) if np.isfinite(runs_) else 1)
             for (_, group), paper_value, runs_ in zip(groups, out["paper"], out["paper_runs"])]
    out["paper_verdict"] = [t.verdict or (t.note if np.isfinite(p) else "") for t, p in zip(tests, out["paper"])]
    out["paper_factor_low"] = [t.low for t in tests]
    out["paper_factor_high"] = [t.high for t in tests]
    out["paper_p"] = [t.p_value for t in tests]
    out["paper_q"] = adjust_pvalues(out["paper_p"].to_numpy())
    row_id = _row_ids(out)
    for column, source in (("improvement", "mean"), ("paper_improvement", "paper")):
        m1 = out[source].where(out["method"] == "M1").groupby(row_id).transform("max")
        out[column] = m1 / out[source]
    return out


def _row_ids(cells: pd.DataFrame) -> pd.Series:
    """A label per cell naming its configuration apart from the method (the table row)."""
    keys = [c for c in config_columns(cells) if c != "method"]
    return cells[keys].map(str).agg("|".join, axis=1)


# -- layout ------------------------------------------------------------------------------------

def _fmt(value: float, spec: str = ".2e") -> str:
    return "" if value is None or not np.isfinite(value) else format(value, spec)


def _ours(cell: pd.Series) -> str:
    """The paper's statistic for one cell: the mean over seeds, with what is left out of it in brackets."""
    text = "-" if cell["n"] == 0 else _fmt(cell["mean"])
    notes = [f"n={cell['n']}/{cell['runs']}"] if cell["n"] != cell["runs"] else []
    notes += [f"{cell[k]} {k}" for k in ("diverged", "failed", "incomplete") if cell[k]]
    return text + (f" [{', '.join(notes)}]" if notes else "")


def _verdict(cell: pd.Series) -> str:
    """Ours against the paper: the factor ours/paper and the consistency test's verdict ("not tested"
    where the cell has too few seeds for it; ``paper_verdict`` then says why)."""
    if not np.isfinite(cell.get("paper", math.nan)) or cell["n"] == 0:
        return ""
    short = {"consistent": "consistent", "ours higher": "higher", "ours lower": "lower"}
    return f"{cell['ratio']:.2f}x {short.get(cell.get('paper_verdict'), 'not tested')}"


def _interval(cell: pd.Series, name: str) -> str:
    """``value [low, high]`` of a statistic with its 95% interval, or the reason it has none."""
    if not np.isfinite(cell.get(name, math.nan)):
        return cell.get("stats_note") or "-"
    low, high = cell.get(f"{name}_low", math.nan), cell.get(f"{name}_high", math.nan)
    bounds = f" [{_fmt(low)}, {_fmt(high)}]" if np.isfinite(low) and np.isfinite(high) else ""
    return _fmt(cell[name]) + bounds


def _failures(cell: pd.Series) -> str:
    if not np.isfinite(cell.get("failure_rate", math.nan)):
        return "-"
    return f"{cell['failures']}/{cell['n']} [{cell['failure_low']:.2f}, {cell['failure_high']:.2f}]"


def _row_keys(cells: pd.DataFrame, spec: TableSpec) -> list[str]:
    rows = [c for c in spec.rows if c in cells]
    varying = [c for c in config_columns(cells)
               if c not in (*rows, "method", "problem", "layers") and cells[c].map(str).nunique() > 1]
    return rows + varying


def _label(column: str) -> str:
    return column.removeprefix("param_")


def wide(cells: pd.DataFrame, spec: TableSpec, kind: str = "main") -> pd.DataFrame:
    """Cells in the paper's layout: rows ``spec.rows`` (+ varying columns), one column group per method.

    ``kind``: ``main`` (ours: the mean over seeds, the paper's statistic; the paper's value; the
    factor ours/paper and the consistency verdict), ``robust`` (geometric mean and median, each with
    its 95% bootstrap interval; failed seeds with a Wilson interval), ``ratio`` (ours/paper,
    improvement over M1 ours and paper) or ``time`` (seconds for 40,001 steps: ours from the median
    ms/step, compilation excluded; the paper's).
    """
    cells = cells[cells["problem"] == spec.problem]
    keys = _row_keys(cells, spec)
    methods = [m for m in METHOD_ORDER if m in set(cells["method"])] + \
              sorted(set(cells["method"]) - set(METHOD_ORDER))
    columns = {"main": lambda m: {m: _ours, f"{m} paper": lambda c: _fmt(c["paper"]),
                                  f"{m} vs paper": _verdict},
               "robust": lambda m: {f"{m} geo-mean [95% CI]": lambda c: _interval(c, "geomean"),
                                    f"{m} median [95% CI]": lambda c: _interval(c, "median"),
                                    f"{m} failed [95% CI]": _failures},
               "ratio": lambda m: {f"{m} ours/paper": lambda c: _fmt(c["ratio"], ".3g"),
                                   f"{m} xM1": lambda c: _fmt(c["improvement"], ".3g"),
                                   f"{m} xM1 paper": lambda c: _fmt(c["paper_improvement"], ".3g")},
               "time": lambda m: {f"{m} s": lambda c: _fmt(c["seconds_40k"], ".0f"),
                                  f"{m} paper s": lambda c: _fmt(c["paper_seconds_40k"], ".0f")}}[kind]
    rows = []
    for values, group in cells.groupby(keys, dropna=False, sort=True) if keys else [((), cells)]:
        values = values if isinstance(values, tuple) else (values,)
        row = {_label(k): "default" if is_missing(v) else v for k, v in zip(keys, values)}  # unset: the default
        for method in methods:
            match = group[group["method"] == method]
            for title, text in columns(method).items():
                if method == "M1" and "xM1" in title:  # M1 over itself: always 1
                    continue
                row[title] = text(match.iloc[0]) if len(match) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (no extra dependency)."""
    head = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def latex(frame: pd.DataFrame, caption: str) -> str:
    """A LaTeX tabular of ``frame`` (pandas' Styler, which needs jinja2), ± as $\\pm$."""
    text = frame.to_latex(index=False, escape=True, caption=caption)
    return text.replace("±", r"$\pm$")


@dataclass
class Table:
    """One table: its spec, its cells (long) and its wide layouts."""

    spec: TableSpec
    cells: pd.DataFrame
    main: pd.DataFrame
    robust: pd.DataFrame
    ratio: pd.DataFrame
    time: pd.DataFrame | None


def build_tables(runs: pd.DataFrame, paper: pd.DataFrame | None = None,
                 cells: pd.DataFrame | None = None) -> list[Table]:
    """Every table the runs fill: the paper's ones first, then one per other problem (``cells``: the
    runs' :func:`cell_stats`, where the caller has them already; the bootstrap makes them costly)."""
    if runs.empty:
        return []
    cells = cell_stats(runs, paper) if cells is None else cells
    known = {spec.problem for spec in TABLES}
    specs = [s for s in TABLES if s.problem in set(cells["problem"])]
    specs += [TableSpec(p, p, f"{p}: {problem_class(p).primary_metric}", ("width", "depth"))
              for p in sorted(set(cells["problem"]) - known)]
    tables = []
    for spec in specs:
        mine = cells[cells["problem"] == spec.problem]
        mine = mine.drop(columns=[c for c in config_columns(mine) if mine[c].isna().all()])
        has_time = "paper_seconds_40k" in mine and mine["paper_seconds_40k"].notna().any()
        tables.append(Table(spec, mine, wide(mine, spec, "main"), wide(mine, spec, "robust"), wide(mine, spec, "ratio"),
                            wide(mine, spec, "time") if has_time else None))
    return tables


def write_result_tables(tables: list[Table], out: str | Path) -> list[Path]:
    """``<name>.csv`` (every cell, every number), ``<name>.md`` and ``<name>.tex`` per table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        name = table.spec.name
        table.cells.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(table_markdown(table))
        tex = "\n".join([latex(table.main, table.spec.title),
                         latex(table.robust, table.spec.title + " (geometric mean, median, failed seeds)"),
                         latex(table.ratio, table.spec.title + " (ratios)")])
        if table.time is not None:
            tex += "\n" + latex(table.time, table.spec.title + " (seconds for 40,001 steps)")
        (out / f"{name}.tex").write_text(tex)
        written += [out / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    return written


def table_markdown(table: Table) -> str:
    """The markdown of one table: ours beside the paper, the heavy-tail statistics, ratios, and
    timings where the paper has them."""
    text = (f"### {table.spec.title}\n\nOurs: the mean over seeds (the paper's statistic); diverged runs are "
            "left out and counted in brackets. Paper: the published value (Table 2: a mean of 10 runs; Table 3 "
            "and the cavity: one run). \"vs paper\": ours/paper and whether the paper's value is consistent with "
            "our seeds (`gradpath.suite.analysis.statistics.paper_consistency`: the published number as one mean of as many runs as "
            "the paper's, drawn from our seed distribution; 95% bootstrap interval of the log ratio).\n\n"
            f"{markdown(table.main)}\n"
            "Statistics that survive one bad seed: geometric mean and median, each with a 95% BCa bootstrap "
            "interval over seeds (9,999 resamples, fixed seed); failed seeds (ending above 10x the cell's median) "
            "with a 95% Wilson interval. With 3 seeds an interval is rough; with one it is not computable.\n\n"
            f"{markdown(table.robust)}\n"
            "Ratio ours/paper, and improvement over M1 (mean of M1 / mean of the method, same row):\n\n"
            f"{markdown(table.ratio)}")
    if table.time is not None:
        text += ("\nTraining seconds for 40,001 steps: ours = median ms/step x 40,001 (compilation excluded, "
                 "this machine); paper = Intel i5 laptop, TF1:\n\n" + markdown(table.time))
    return text
