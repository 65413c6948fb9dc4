"""The paper's tables from a runs table (:func:`suite.store.runs_table`), with the paper's numbers beside ours.

A *cell* is every run with the same configuration except the seed. Per cell: ``n`` (complete runs
with a finite error), ``runs``, ``diverged`` (loss became non-finite, or a non-finite final error),
``failed``, ``incomplete`` (missing, killed or interrupted), ``mean``, ``std`` (ddof 1), ``median``,
the 95% confidence interval of the mean (Student t, n - 1 degrees of freedom), the paper's value,
``ratio`` = mean / paper and ``improvement`` = mean of M1 / mean of this method in the same row.
Diverged runs are left out of the mean and counted beside it, never dropped silently.

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
from scipy import stats

from backends.settings import TrainSettings
from problems import problem_class
from suite.record import DONE

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


def paper_results() -> pd.DataFrame:
    """Every number the paper reports (``suite/data/paper_results.csv``), with registry problem names
    and a ``parameters`` dict parsed from its ``setting`` column."""
    text = resources.files("suite").joinpath("data", "paper_results.csv").read_text()
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


def _stats(group: pd.DataFrame) -> dict[str, object]:
    status = group["status"]
    error = pd.to_numeric(group["error"], errors="coerce") if "error" in group else pd.Series(np.nan, group.index)
    ok = (status == "complete") & np.isfinite(error)
    values = error[ok].to_numpy(float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    ms = pd.to_numeric(group.get("ms_per_step", pd.Series(dtype=float)), errors="coerce")[ok]
    ms_median = float(ms.median()) if len(ms.dropna()) else math.nan
    return {"n": n, "runs": len(group), "diverged": int((status == "diverged").sum() + ((status == "complete") & ~ok).sum()),
            "failed": int(status.isin(DONE_BAD).sum()),
            "incomplete": int((~status.isin((*DONE, *DONE_BAD))).sum()),
            "mean": mean, "std": std, "median": float(np.median(values)) if n else math.nan,
            "ci95_low": mean - half, "ci95_high": mean + half, "ms_per_step": ms_median,
            "seconds_40k": ms_median * PAPER_STEPS / 1e3}


def _paper_value(paper: pd.DataFrame, cell: pd.Series, metric: str | None) -> float:
    if metric is None:
        return math.nan
    rows = paper[(paper["problem"] == cell["problem"]) & (paper["metric"] == metric)
                 & (paper["method"] == cell.get("method")) & (paper["width"] == cell.get("width"))
                 & (paper["depth"] == cell.get("depth"))]
    for _, row in rows.iterrows():
        if all(same_value(cell.get(f"param_{k}"), v) for k, v in row["parameters"].items()):
            return float(row["value"])
    return math.nan


def cell_groups(runs: pd.DataFrame) -> Iterator[tuple[dict[str, object], pd.DataFrame]]:
    """Each cell's configuration (every config column but the seed; columns a problem leaves empty
    are left out) and its runs, problem by problem in the order the runs come."""
    for _, frame in runs.groupby("problem", sort=False):
        frame = frame.drop(columns=[c for c in config_columns(frame) if frame[c].isna().all()])
        keys = [c for c in config_columns(frame) if c != "seed"]
        for values, group in frame.groupby(keys, dropna=False, sort=False):
            yield dict(zip(keys, values)), group


def cell_stats(runs: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell (configuration without the seed): the statistics above, the paper's value and ratios."""
    paper = paper_results() if paper is None else paper
    out = pd.DataFrame([{**cell, "metric": problem_class(cell["problem"]).primary_metric, **_stats(group)}
                        for cell, group in cell_groups(runs)])
    if out.empty:
        return out
    out["paper"] = [_paper_value(paper, c, PAPER_METRIC.get(c["metric"])) for _, c in out.iterrows()]
    out["paper_seconds_40k"] = [_paper_value(paper, c, PAPER_TIME) for _, c in out.iterrows()]
    params = sorted(c for c in out if c.startswith("param_"))
    config = [c for c in config_columns(out) if c not in params]
    out = out[config + params + [c for c in out if c not in config and c not in params]]
    out["ratio"] = out["mean"] / out["paper"]
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
    if cell["n"] == 0:
        text = "-"
    else:
        half = cell["ci95_high"] - cell["mean"]
        text = _fmt(cell["mean"]) + (f" ± {_fmt(half, '.1e')}" if np.isfinite(half) else "")
    notes = [f"n={cell['n']}/{cell['runs']}"] if cell["n"] != cell["runs"] else []
    notes += [f"{cell[k]} {k}" for k in ("diverged", "failed", "incomplete") if cell[k]]
    return text + (f" [{', '.join(notes)}]" if notes else "")


def _row_keys(cells: pd.DataFrame, spec: TableSpec) -> list[str]:
    rows = [c for c in spec.rows if c in cells]
    varying = [c for c in config_columns(cells)
               if c not in (*rows, "method", "problem", "layers") and cells[c].map(str).nunique() > 1]
    return rows + varying


def _label(column: str) -> str:
    return column.removeprefix("param_")


def wide(cells: pd.DataFrame, spec: TableSpec, kind: str = "main") -> pd.DataFrame:
    """Cells in the paper's layout: rows ``spec.rows`` (+ varying columns), one column group per method.

    ``kind``: ``main`` (ours: mean ± 95% CI half-width; the paper's value), ``ratio`` (ours/paper,
    improvement over M1 ours and paper) or ``time`` (seconds for 40,001 steps: ours from the median
    ms/step, compilation excluded; the paper's).
    """
    cells = cells[cells["problem"] == spec.problem]
    keys = _row_keys(cells, spec)
    methods = [m for m in METHOD_ORDER if m in set(cells["method"])] + \
              sorted(set(cells["method"]) - set(METHOD_ORDER))
    columns = {"main": lambda m: {m: _ours, f"{m} paper": lambda c: _fmt(c["paper"])},
               "ratio": lambda m: {f"{m} ours/paper": lambda c: _fmt(c["ratio"], ".3g"),
                                   f"{m} xM1": lambda c: _fmt(c["improvement"], ".3g"),
                                   f"{m} xM1 paper": lambda c: _fmt(c["paper_improvement"], ".3g")},
               "time": lambda m: {f"{m} s": lambda c: _fmt(c["seconds_40k"], ".0f"),
                                  f"{m} paper s": lambda c: _fmt(c["paper_seconds_40k"], ".0f")}}[kind]
    rows = []
    for values, group in cells.groupby(keys, dropna=False, sort=True) if keys else [((), cells)]:
        values = values if isinstance(values, tuple) else (values,)
        row = {_label(k): v for k, v in zip(keys, values)}
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
    ratio: pd.DataFrame
    time: pd.DataFrame | None


def build_tables(runs: pd.DataFrame, paper: pd.DataFrame | None = None) -> list[Table]:
    """Every table the runs fill: the paper's ones first, then one per other problem."""
    if runs.empty:
        return []
    cells = cell_stats(runs, paper)
    known = {spec.problem for spec in TABLES}
    specs = [s for s in TABLES if s.problem in set(cells["problem"])]
    specs += [TableSpec(p, p, f"{p}: {problem_class(p).primary_metric}", ("width", "depth"))
              for p in sorted(set(cells["problem"]) - known)]
    tables = []
    for spec in specs:
        mine = cells[cells["problem"] == spec.problem]
        mine = mine.drop(columns=[c for c in config_columns(mine) if mine[c].isna().all()])
        has_time = "paper_seconds_40k" in mine and mine["paper_seconds_40k"].notna().any()
        tables.append(Table(spec, mine, wide(mine, spec, "main"), wide(mine, spec, "ratio"),
                            wide(mine, spec, "time") if has_time else None))
    return tables


def write_tables(tables: list[Table], out: str | Path) -> list[Path]:
    """``<name>.csv`` (every cell, every number), ``<name>.md`` and ``<name>.tex`` per table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        name = table.spec.name
        table.cells.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(table_markdown(table))
        tex = latex(table.main, table.spec.title) + "\n" + latex(table.ratio, table.spec.title + " (ratios)")
        if table.time is not None:
            tex += "\n" + latex(table.time, table.spec.title + " (seconds for 40,001 steps)")
        (out / f"{name}.tex").write_text(tex)
        written += [out / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    return written


def table_markdown(table: Table) -> str:
    """The markdown of one table: ours beside the paper, then ratios, then timings where the paper has them."""
    text = (f"### {table.spec.title}\n\nOurs: mean ± 95% CI half-width over seeds (Student t); diverged runs are "
            f"left out of the mean and counted in brackets. Paper: the published value.\n\n{markdown(table.main)}\n"
            f"Ratio ours/paper, and improvement over M1 (mean of M1 / mean of the method, same row):\n\n"
            f"{markdown(table.ratio)}")
    if table.time is not None:
        text += ("\nTraining seconds for 40,001 steps: ours = median ms/step x 40,001 (compilation excluded, "
                 "this machine); paper = Intel i5 laptop, TF1:\n\n" + markdown(table.time))
    return text
