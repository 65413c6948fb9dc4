"""The same runs trained on two machines: their errors and step times side by side.

    gradpath analyse compare-stores STORE_A STORE_B [--label-a cpu --label-b cuda]
        [--out results/paper/h200/check.md]

A run's key is the hash of its configuration, and ``device = "auto"`` is part of that
configuration, so a campaign run on a GPU machine writes records with the same keys as the same
campaign on a CPU machine. Before such records join one store (and one report), this says whether
the two machines give the same results:
- runs that are done in both stores but ended differently (complete in one, diverged in the other);
- per run, the errors (same seed, same initial weights and batches, so the two differ only in how
  the machines round, which 40,000 Adam steps can amplify, and in anything else that differs
  between them: framework versions, seeds vectorised per job);
- per cell, both means, their ratio and a paired test over the seeds (one-sample t-test of
  log(error_b / error_a) against 0), and the median ms per step of each.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from gradpath.suite.analysis.paper_comparison import device_column, measured_cells
from gradpath.suite.runs.record import DONE
from gradpath.suite.runs.store import Store, runs_table
from gradpath.suite.analysis.tables import cell_groups, config_columns


def _done_runs(root: str | Path) -> pd.DataFrame:
    runs = runs_table(Store(root, create=False))
    if runs.empty:
        raise SystemExit(f"no run records in {root}")
    runs = runs[runs["status"].isin(DONE)]
    return runs.assign(device_name=device_column(runs))


def paired_runs(store_a: str | Path, store_b: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The keys both stores hold as done: (complete in both, with ``error_a``/``error_b``, ``ms_a``/``ms_b``,
    ``device_a``/``device_b`` and every config column; done in both but ended differently, with ``status_a``/``status_b``)."""
    a, b = _done_runs(store_a), _done_runs(store_b)
    ours = {"error": "error", "ms_per_step": "ms", "device_name": "device", "status": "status"}
    both = a[["key", *config_columns(a), *ours]].rename(columns={k: f"{v}_a" for k, v in ours.items()}).merge(
        b[["key", *ours]].rename(columns={k: f"{v}_b" for k, v in ours.items()}), on="key")
    if both.empty:
        raise SystemExit(f"{store_a} and {store_b} hold no done run with the same key")
    differ = both[both["status_a"] != both["status_b"]]
    paired = both[(both["status_a"] == "complete") & (both["status_b"] == "complete")]
    return paired.reset_index(drop=True), differ.reset_index(drop=True)


def cell_comparison(paired: pd.DataFrame) -> pd.DataFrame:
    """Per cell (every config column but the seed): seeds, both means, their ratio (b over a), the paired
    p-value, the spread of the per-seed ratios and the median ms per step; labelled as in REPORT.md.
    ``seeds`` holds the cell's (seed, error_a, error_b), by seed."""
    rows = []
    for cell, group in cell_groups(paired):
        a, b = group["error_a"].to_numpy(float), group["error_b"].to_numpy(float)
        log_ratio = np.log(b / a)
        same = bool(np.all(log_ratio == 0))
        p = 1.0 if same else float(stats.ttest_1samp(log_ratio, 0.0).pvalue) if len(a) > 1 else math.nan
        rows.append({**cell, "n": len(a), "mean_a": a.mean(), "mean_b": b.mean(), "ratio": b.mean() / a.mean(),
                     "paired_p": p, "seed_ratio_min": float(np.exp(log_ratio.min())),
                     "seed_ratio_max": float(np.exp(log_ratio.max())),
                     "ms_a": float(np.median(group["ms_a"])), "ms_b": float(np.median(group["ms_b"])),
                     "seeds": list(group.sort_values("seed")[["seed", "error_a", "error_b"]].itertuples(index=False))})
    return measured_cells(pd.DataFrame(rows)) if rows else pd.DataFrame()


def report(paired: pd.DataFrame, differ: pd.DataFrame, cells: pd.DataFrame, label_a: str, label_b: str) -> str:
    """Markdown: runs that ended differently, the cell table, then every paired run."""
    devices = {label_a: sorted(set(paired["device_a"].astype(str))), label_b: sorted(set(paired["device_b"].astype(str)))}
    lines = [f"# The same runs on two machines: {label_a} and {label_b}", "",
             "Devices: " + "; ".join(f"{k} = {', '.join(v)}" for k, v in devices.items()) + ".", ""]
    if len(differ):
        lines += [f"**{len(differ)} run{'s' if len(differ) != 1 else ''} ended differently:** "
                  + "; ".join(f"{r.key} ({label_a}: {r.status_a}, {label_b}: {r.status_b})"
                              for r in differ.itertuples(index=False)) + ".", ""]
    lines += [f"| configuration | method | backend | seeds | mean {label_a} | mean {label_b} | {label_b}/{label_a} "
              f"| paired p | per-seed ratio, min-max | ms/step {label_a} | ms/step {label_b} |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells.itertuples(index=False):
        lines.append(f"| {c.label} | {c.method} | {c.backend} | {c.n} | {c.mean_a:.3e} | {c.mean_b:.3e} | "
                     f"{c.ratio:.3f} | {c.paired_p:.2g} | {c.seed_ratio_min:.2f}-{c.seed_ratio_max:.2f} | "
                     f"{c.ms_a:.2f} | {c.ms_b:.2f} |")
    lines += ["", "Paired p: one-sample t-test of log(error ratio) over the seeds against 0. Step times are each "
              "run's median ms per vectorised step as its summary records it; runs that shared their machine "
              "with other jobs are slower than alone.", "",
              f"| run | seed | error {label_a} | error {label_b} |", "|---|---|---|---|"]
    for c in cells.itertuples(index=False):
        lines += [f"| {c.label} {c.method} {c.backend} | {r.seed} | {r.error_a:.4e} | {r.error_b:.4e} |" for r in c.seeds]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> None:
    """Print (and with ``--out`` write) the report of the module docstring for ``args``
    (``gradpath analyse``'s options, gradpath.suite.cli.analyse)."""
    paired, differ = paired_runs(args.store_a, args.store_b)
    text = report(paired, differ, cell_comparison(paired), args.label_a, args.label_b)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
