"""REPORT.md's "Beside the paper" section: the headline factors, the factor-2 count, the two backends
side by side and what the campaign cost, all computed from the per-cell statistics of suite.tables.

Each function takes the cells of :func:`suite.tables.cell_stats` (or the runs table) and returns
markdown lines; nothing here reads the store or trains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from suite.record import DONE
from suite.tables import config_columns

# within this factor of the paper's value a cell counts as reproduced (issue 8)
FACTOR = 2.0


def configuration_label(cell: pd.Series) -> str:
    """The configuration apart from method, backend and seed, e.g. ``helmholtz 50x3`` or ``cavity psi-p``."""
    text = str(cell["problem"])
    if isinstance(cell.get("param_form"), str):
        text += f" {cell['param_form']}"
    elif np.isfinite(cell.get("width", np.nan)) and np.isfinite(cell.get("depth", np.nan)):
        text += f" {int(cell['width'])}x{int(cell['depth'])}"
    return text


def sci(value: float) -> str:
    """``value`` as 1.23e-02, or "-" where there is none."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.2e}"


def _x(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.1f}x"


def measured_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with results, labelled so that two configurations never share a label: where cells of
    one problem/architecture differ in a setting (an ablation), the label names it, e.g.
    ``helmholtz 50x3 (weighting=code-global)``."""
    out = cells[cells["n"] > 0].copy()
    out["label"] = [configuration_label(c) for _, c in out.iterrows()]
    settings = [c for c in config_columns(out) if c not in ("problem", "backend", "method", "seed", "layers")
                and not c.startswith("param_")]
    for _, group in out.groupby("label", sort=False):
        varying = [c for c in settings if group[c].map(str).nunique() > 1]  # map(str): NaN counts too
        for i, cell in group.iterrows():
            if varying:
                shown = ("default" if pd.isna(cell[c]) else cell[c] for c in varying)
                out.at[i, "label"] += " (" + ", ".join(f"{c}={v}" for c, v in zip(varying, shown)) + ")"
    return out


def headline_lines(cells: pd.DataFrame) -> list[str]:
    """M4/M1 per configuration and backend, beside the paper's (Helmholtz 50x3: 27x, Klein-Gordon 64x, cavity psi-p 7.9x)."""
    m = measured_cells(cells)
    rows = []
    for (label, backend), group in m.groupby(["label", "backend"], sort=False):
        by = group.set_index("method")
        if "M1" not in by.index or "M4" not in by.index:
            continue
        rows.append(f"| {label} | {backend} | {sci(by.at['M1', 'mean'])} | {sci(by.at['M4', 'mean'])} | "
                    f"{_x(by.at['M4', 'improvement'])} | {_x(by.at['M4', 'paper_improvement'])} | "
                    f"{int(by.at['M1', 'n'])}, {int(by.at['M4', 'n'])} |")
    if not rows:
        return ["No configuration has both M1 and M4 results yet.\n"]
    return ["| configuration | backend | M1 mean | M4 mean | M4 vs M1 (ours) | M4 vs M1 (paper) | seeds M1, M4 |\n",
            "|---|---|---|---|---|---|---|\n", *[r + "\n" for r in rows]]


def factor_lines(cells: pd.DataFrame, factor: float = FACTOR) -> list[str]:
    """How many measured cells lie within ``factor`` of the paper's value, and the ones that do not."""
    m = measured_cells(cells)
    m = m[np.isfinite(m["paper"])]
    if m.empty:
        return ["No measured cell has a value in the paper yet.\n"]
    inside = (m["ratio"] <= factor) & (m["ratio"] >= 1 / factor)
    lines = [f"{int(inside.sum())} of {len(m)} measured cells with a value in the paper lie within a factor "
             f"{factor:g} of it (ours/paper between {1 / factor:g} and {factor:g}); "
             f"{int((m['ratio'] > factor).sum())} are worse, {int((m['ratio'] < 1 / factor).sum())} better.\n"]
    outside = m[~inside]
    if not outside.empty:
        lines += ["\n| configuration | backend | method | seeds | ours (mean) | paper | ours/paper |\n",
                  "|---|---|---|---|---|---|---|\n"]
        lines += [f"| {c['label']} | {c['backend']} | {c['method']} | {int(c['n'])} | {sci(c['mean'])} | "
                  f"{sci(c['paper'])} | {c['ratio']:.2f} |\n" for _, c in outside.iterrows()]
    return lines


def seed_pairs(runs: pd.DataFrame, first: str, second: str, values: tuple[str, ...] = ("error",)) -> pd.DataFrame:
    """The runs of each (configuration label, method, seed) complete in both backends, one row each:
    columns ``(value, backend)`` for every name in ``values``. Both backends train a seed from the
    same weights and batches, so a pair differs only by rounding until training amplifies it."""
    done = runs[runs["status"] == "complete"] if "status" in runs else runs.iloc[:0]
    done = done[done["backend"].isin([first, second])].copy()
    if done.empty:
        return pd.DataFrame(columns=pd.MultiIndex.from_product([list(values), [first, second]]))
    done["label"] = [configuration_label(r) for _, r in done.iterrows()]
    return done.pivot_table(index=["label", "method", "seed"], columns="backend", values=list(values),
                            aggfunc="first").dropna()


def _seed_differences(runs: pd.DataFrame, first: str) -> dict[tuple[str, str, str], float]:
    """Per (configuration, method, other backend): the largest |error - first's| / first's over seeds run in both."""
    backends = set(runs["backend"]) if "backend" in runs else set()
    out = {}
    for other in sorted(backends - {first}) if first in backends else ():
        errors = seed_pairs(runs, first, other)["error"]
        if errors.empty:
            continue
        relative = ((errors[other] - errors[first]).abs() / errors[first]).groupby(level=["label", "method"]).max()
        out.update({(label, method, other): float(v) for (label, method), v in relative.items()})
    return out


def backend_lines(cells: pd.DataFrame, runs: pd.DataFrame | None = None) -> list[str]:
    """Cells measured in more than one backend, side by side: means, each over the first, and (given
    the runs) the largest per-seed difference, since both backends train a seed from the same
    weights and batches."""
    m = measured_cells(cells)
    backends = list(dict.fromkeys(m["backend"]))
    if len(backends) < 2:
        return [f"Only {', '.join(backends) or 'no backend'} has results so far.\n"]
    wide = m.pivot_table(index=["label", "method"], columns="backend", values="mean", sort=False)
    seeds = m.pivot_table(index=["label", "method"], columns="backend", values="n", sort=False)
    both = wide.dropna()
    if both.empty:
        return ["No cell has results in two backends yet.\n"]
    first, others = backends[0], backends[1:]
    per_seed = _seed_differences(runs, first) if runs is not None else {}
    head = "| configuration | method | " + " | ".join(f"{b} (seeds)" for b in backends) + " | " + \
        " | ".join(f"{b}/{first} | max per-seed {b} vs {first}" for b in others) + " |\n"
    lines = [head, "|---|---|" + "---|" * (len(backends) + 2 * len(others)) + "\n"]
    for (label, method), row in both.iterrows():
        means = " | ".join(f"{sci(row[b])} ({int(seeds.at[(label, method), b])})" for b in backends)
        ratios = " | ".join(f"{row[b] / row[first]:.4f} | {_percent(per_seed.get((label, method, b)))}" for b in others)
        lines.append(f"| {label} | {method} | {means} | {ratios} |\n")
    return lines


def _percent(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.2g}%"


def _run_times(done: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Each finished run's first start, its end, and its share of its job's training seconds."""
    # a run that went on from a checkpoint started with its first process; its wall_seconds add
    # up every process, so its end is when it finished (records older than `finished`: start + wall)
    start = pd.to_datetime(done.get("first_started", done["started"]).fillna(done["started"]), utc=True,
                           errors="coerce")
    wall = pd.to_numeric(done.get("wall_seconds"), errors="coerce").fillna(0)
    end = start + pd.to_timedelta(wall, unit="s")
    if "finished" in done:
        end = pd.to_datetime(done["finished"], utc=True, errors="coerce").fillna(end)
    # a vectorised job's seeds share one training time: count each job's once
    job = done.get("vectorised_seeds", pd.Series(1, index=done.index)).fillna(1).astype(float)
    return start, end, pd.to_numeric(done["train_seconds"], errors="coerce") / job


def _span(start: pd.Series, end: pd.Series) -> str:
    hours = (end.max() - start.min()).total_seconds() / 3600
    return f"between {start.min():%Y-%m-%d %H:%M} and {end.max():%Y-%m-%d %H:%M} UTC ({hours:.1f} h of wall clock"


def device_column(runs: pd.DataFrame) -> pd.Series:
    """Each run's device name as text, "unknown" where its record has none (records before manifests had it)."""
    return runs.get("device_name", pd.Series(None, index=runs.index, dtype=object)).fillna("unknown").astype(str)


def device_names(runs: pd.DataFrame) -> list[str]:
    """The devices that ``runs`` ran on, sorted; "unknown" left out."""
    return sorted(set(device_column(runs)) - {"unknown"})


def cost_lines(runs: pd.DataFrame) -> list[str]:
    """The campaign's wall-clock span, summed training time, machines and devices, from the run records.

    Where runs ran on more than one device (a GPU machine lent for part of a campaign), one line per
    device follows: its runs, their span and their training hours.
    """
    done = runs[runs["status"].isin(DONE)]
    if done.empty or "started" not in done:
        return ["No run has finished yet.\n"]
    start, end, train = _run_times(done)
    hosts = ", ".join(sorted({str(h) for h in done.get("hostname", pd.Series(dtype=object)).dropna()})) or "unknown"
    device = device_column(done)
    devices = device_names(done)
    commits = sorted({str(c) for c in done.get("git_commit", pd.Series(dtype=object)).dropna()})
    lines = [f"- {len(done)} runs finished {_span(start, end)}, interruptions included); "
             f"{train.sum() / 3600:.1f} h of training steps (each vectorised job counted once).\n",
             f"- Machines: {hosts}; devices: {', '.join(devices) or 'unknown'}.\n"]
    if len(set(device)) > 1:  # "unknown" (records without a device name) gets its own line too
        for name in sorted(set(device)):
            on = device == name
            count = int(on.sum())
            lines.append(f"  - {name}: {count} run{'s' if count != 1 else ''} {_span(start[on], end[on])}); "
                         f"{train[on].sum() / 3600:.1f} h of training steps.\n")
    return lines + [f"- gradpath commits: {', '.join(commits) if commits else 'unknown'}.\n"]


def comparison_section(cells: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The whole "Beside the paper" section of REPORT.md."""
    if cells.empty:
        return ""
    parts = ["## Beside the paper\n\n", "### M4 against M1\n\n", *headline_lines(cells),
             f"\n### Within a factor {FACTOR:g} of the paper\n\n", *factor_lines(cells),
             "\n### The backends side by side\n\n", *backend_lines(cells, runs),
             "\n### What it cost\n\n", *cost_lines(runs), "\n"]
    return "".join(parts)


