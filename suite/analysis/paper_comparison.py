"""REPORT.md's "Beside the paper" section: the headline factors, the consistency of each cell with the
paper, the plain-language factor-2 count, the paired method comparisons, the two backends side by side
and what the campaign cost, all computed from the per-cell statistics of gradpath.suite.analysis.tables.

Each function takes the cells of :func:`gradpath.suite.analysis.tables.cell_stats` (or the runs table) and returns
markdown lines; nothing here reads the store or trains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradpath.suite.analysis.method_comparison import comparison_lines, method_comparisons, p_text
from gradpath.suite.runs.record import DONE
from gradpath.suite.analysis.statistics import MIN_SEEDS_PAPER_TEST, unpaired_comparison
from gradpath.suite.analysis.tables import BOOKKEEPING, config_columns

# a plain-language summary beside the consistency test: within this factor of the paper's value
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
    ``helmholtz 50x3 (weighting=code-global)``. Bookkeeping settings (:data:`BOOKKEEPING`: compile,
    device, log_every) are named only where two cells of one backend and method would otherwise
    share a label, so that a JAX cell compiled and a PyTorch cell run eagerly still sit side by side."""
    out = cells[cells["n"] > 0].copy()
    out["label"] = [configuration_label(c) for _, c in out.iterrows()]
    # problem parameters count as settings too (a campaign may vary C or Re); the form is in the label already
    settings = [c for c in config_columns(out) if c not in ("problem", "backend", "method", "seed", "layers",
                                                             "param_form")]
    for _, group in out.groupby("label", sort=False):
        varying = [c for c in settings if group[c].map(str).nunique() > 1]  # map(str): NaN counts too
        maths = [c for c in varying if c not in BOOKKEEPING]
        if group.assign(_k=group[maths].map(str).agg("|".join, axis=1) if maths else "") \
                .duplicated(["backend", "method", "_k"]).any():
            maths = varying  # the bookkeeping settings are what tells these cells apart
        for i, cell in group.iterrows():
            if maths:
                shown = ("default" if pd.isna(cell[c]) else cell[c] for c in maths)
                out.at[i, "label"] += " (" + ", ".join(f"{c.removeprefix('param_')}={v}"
                                                       for c, v in zip(maths, shown)) + ")"
    # every consumer (pivots, pairs, profiles) relies on one cell per label, backend and method
    assert not out.duplicated(["label", "backend", "method"]).any(), "two cells share a label"
    return out


def headline_lines(cells: pd.DataFrame, errors: dict[str, pd.Series]) -> list[str]:
    """M4 against M1 per configuration and backend: the ratio of means beside the paper's (Helmholtz
    50x3: 27x, Klein-Gordon 64x, cavity psi-p 7.9x), and the ratio of geometric means with its 95%
    bootstrap interval and a Mann-Whitney test (M1 and M4 use different networks: unpaired)."""
    m = measured_cells(cells)
    rows = []
    for (label, backend), group in m.groupby(["label", "backend"], sort=False):
        by = group.reset_index().set_index("method")
        if "M1" not in by.index or "M4" not in by.index:
            continue
        c = unpaired_comparison(errors[by.at["M1", "cell"]].to_numpy(), errors[by.at["M4", "cell"]].to_numpy())
        geo = (f"{_x(c.ratio.value)} [{c.ratio.low:.3g}, {c.ratio.high:.3g}]" if np.isfinite(c.ratio.low)
               else c.note or "-")
        rows.append(f"| {label} | {backend} | {sci(by.at['M1', 'mean'])} | {sci(by.at['M4', 'mean'])} | "
                    f"{_x(by.at['M4', 'improvement'])} | {_x(by.at['M4', 'paper_improvement'])} | {geo} | "
                    f"{p_text(c.p_value)} | {int(by.at['M1', 'n'])}, {int(by.at['M4', 'n'])} |")
    if not rows:
        return ["No configuration has both M1 and M4 results yet.\n"]
    return ["M4 vs M1 is M1's error over M4's (how many times lower M4 ends). \"Geo-means\": the ratio of the "
            "geometric means over seeds with its 95% bootstrap interval (two samples: M1 and M4 start from "
            "different networks, so they are not paired); p: two-sided Mann-Whitney U on log error.\n\n",
            "| configuration | backend | M1 mean | M4 mean | M4 vs M1 (means) | M4 vs M1 (paper) | "
            "M4 vs M1 (geo-means) [95% CI] | p | seeds M1, M4 |\n",
            "|---|---|---|---|---|---|---|---|---|\n", *[r + "\n" for r in rows]]


def consistency_lines(cells: pd.DataFrame) -> list[str]:
    """Per backend: how many cells with enough seeds are consistent with the paper's value, higher or
    lower (:func:`gradpath.suite.analysis.statistics.paper_consistency`), the inconsistent ones listed, and how often
    the two backends reach the same verdict on the same cell."""
    m = measured_cells(cells)
    m = m[np.isfinite(m["paper"])]
    if m.empty:
        return ["No measured cell has a value in the paper yet.\n"]
    tested = m[m["n"] >= MIN_SEEDS_PAPER_TEST]
    lines = ["Is the paper's value a plausible outcome of our seed distribution? Under the null hypothesis, the "
             "paper's number is a mean of as many runs as the paper's (10 for Table 2, one run for Table 3 and the "
             "cavity) drawn from the same distribution as our seeds. Resampling our seeds gives the distribution of "
             "log(our mean / such a mean); the paper's value is *consistent* where the observed log ratio lies in its "
             "central 95%, else ours is *higher* or *lower*. This uses our seed spread for both numbers (the paper "
             f"gives none). Cells with fewer than {MIN_SEEDS_PAPER_TEST} seeds are not tested. q: Benjamini-Hochberg "
             "over every tested cell of this report. Its size, simulated with log-normal seeds: at a nominal 5% it "
             "flags a true null 5.5-6% of the time where seeds spread by a factor up to about 1.6 (the JAX Table 2 "
             "cells' spreads give 6.1%), 9% at a factor 2 and 16% at a factor 10 (`tests/test_statistics.py`).\n\n",
             "| backend | cells tested | consistent | ours higher | ours lower | still inconsistent at q < 0.05 |\n",
             "|---|---|---|---|---|---|\n"]
    if tested.empty:
        lines = lines[:1] + ["No cell has enough seeds to test.\n"]
    for backend, group in tested.groupby("backend", sort=False):
        counts = group["paper_verdict"].value_counts()
        lines.append(f"| {backend} | {len(group)} | {counts.get('consistent', 0)} | {counts.get('ours higher', 0)} | "
                     f"{counts.get('ours lower', 0)} | {int((group['paper_q'] < 0.05).sum())} |\n")
    untested = m[m["n"] < MIN_SEEDS_PAPER_TEST]
    if not untested.empty:
        per = untested.groupby("backend", sort=False).size()
        lines.append("\nNot tested (too few seeds): " + ", ".join(f"{n} {b} cells" for b, n in per.items()) + ".\n")
    outside = tested[tested["paper_verdict"] != "consistent"]
    if not outside.empty:
        lines += ["\n| configuration | backend | method | seeds | ours (mean) | paper | ours/paper | "
                  "95% interval under the null | p | q |\n", "|---|---|---|---|---|---|---|---|---|---|\n"]
        lines += [f"| {c['label']} | {c['backend']} | {c['method']} | {int(c['n'])} | {sci(c['mean'])} | "
                  f"{sci(c['paper'])} | {c['ratio']:.2f} ({c['paper_verdict']}) | "
                  f"[{c['paper_factor_low']:.2f}, {c['paper_factor_high']:.2f}] | {p_text(c['paper_p'])} | "
                  f"{p_text(c['paper_q'])} |\n" for _, c in outside.iterrows()]
    lines += ["\n", *_agreement_lines(tested)]
    return lines


def _agreement_lines(tested: pd.DataFrame) -> list[str]:
    """How often two backends reach the same verdict on a cell: agreement, not a second reproduction,
    since both train a seed from the same weights and batches."""
    backends = list(dict.fromkeys(tested["backend"]))
    if len(backends) < 2:
        return []
    verdicts = tested.pivot_table(index=["label", "method"], columns="backend", values="paper_verdict",
                                  aggfunc="first").dropna()
    if verdicts.empty:
        return []
    first = backends[0]
    lines = []
    for other in backends[1:]:
        if other not in verdicts:
            continue
        same = int((verdicts[first] == verdicts[other]).sum())
        lines.append(f"- {first} and {other} reach the same verdict on {same} of {len(verdicts)} cells tested in "
                     f"both. Both backends train a seed from the same weights and batches, so this is agreement "
                     f"between two implementations, not a second, independent reproduction.\n")
    return lines


def factor_lines(cells: pd.DataFrame, factor: float = FACTOR) -> list[str]:
    """In plain language: how many measured cells lie within ``factor`` of the paper's value, and the ones
    that do not (not a test; :func:`consistency_lines` is the test)."""
    m = measured_cells(cells)
    m = m[np.isfinite(m["paper"])]
    if m.empty:
        return ["No measured cell has a value in the paper yet.\n"]
    inside = (m["ratio"] <= factor) & (m["ratio"] >= 1 / factor)
    per = ", ".join(f"{b}: {int(inside[g.index].sum())} of {len(g)}" for b, g in m.groupby("backend", sort=False))
    lines = [f"{int(inside.sum())} of {len(m)} measured cells with a value in the paper lie within a factor "
             f"{factor:g} of it ({per}; ours/paper between {1 / factor:g} and {factor:g}); "
             f"{int((m['ratio'] > factor).sum())} are worse, {int((m['ratio'] < 1 / factor).sum())} better.\n"]
    outside = m[~inside]
    if not outside.empty:
        lines += ["\n| configuration | backend | method | seeds | ours (mean) | paper | ours/paper | test |\n",
                  "|---|---|---|---|---|---|---|---|\n"]
        lines += [f"| {c['label']} | {c['backend']} | {c['method']} | {int(c['n'])} | {sci(c['mean'])} | "
                  f"{sci(c['paper'])} | {c['ratio']:.2f} | {c['paper_verdict'] or '-'} |\n"
                  for _, c in outside.iterrows()]
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


def comparison_section(cells: pd.DataFrame, runs: pd.DataFrame, errors: dict[str, pd.Series]) -> str:
    """The whole "Beside the paper" section of REPORT.md; ``errors`` from :func:`gradpath.suite.analysis.tables.errors_by_cell`."""
    if cells.empty:
        return ""
    m = measured_cells(cells)
    pairs = comparison_lines(method_comparisons(m, errors))
    parts = ["## Beside the paper\n\n", "### M4 against M1\n\n", *headline_lines(cells, errors),
             "\n### Consistent with the paper?\n\n", *consistency_lines(cells),
             f"\n### Within a factor {FACTOR:g} of the paper (plain language, not a test)\n\n", *factor_lines(cells)]
    if pairs:
        parts += ["\n### Method against method, seed by seed\n\n",
                  "Ratio: geometric mean of the first method's errors over the second's (below 1: the first ends "
                  "lower), with a 95% BCa bootstrap interval. M2 vs M1 and M4 vs M3 share a network, so seed s "
                  "starts both from the same weights and batches: they are paired by seed and tested by the "
                  "Wilcoxon signed-rank test on the paired log errors (exact where no difference ties or "
                  "vanishes, else scipy's normal approximation; with 3 pairs p cannot go below 0.25). M4 vs M1 use different networks: Mann-Whitney U on log error. P(lower): the share of "
                  "seeds (paired) or of seed pairs (unpaired) on which the first method ends lower. q: "
                  "Benjamini-Hochberg over every row of this table.\n\n", *pairs]
    parts += ["\n### The backends side by side\n\n", *backend_lines(cells, runs),
              "\n### What it cost\n\n", *cost_lines(runs), "\n"]
    return "".join(parts)
