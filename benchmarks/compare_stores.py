"""The same runs trained on two machines: their errors and step times side by side.

    PYTHONPATH=. python benchmarks/compare_stores.py STORE_A STORE_B [--label-a cpu --label-b cuda]
        [--out results/paper/h200/check.md]

A run's key is the hash of its configuration, and ``device = "auto"`` is part of that
configuration, so a campaign run on a GPU machine writes records with the same keys as the same
campaign on a CPU machine. Before such records join one store (and one report), this says whether
the two machines give the same errors: per run (same seed, same initial weights, so the two
differ only by float32 rounding that 40,000 Adam steps amplify), per cell (mean, and Welch's
t-test over the seeds), and the median ms per step of each. Only keys that both stores hold as
complete are compared.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from suite.paper_comparison import configuration_label
from suite.store import Store, runs_table

CELL = ["problem", "width", "depth", "method", "backend"]


def paired_runs(store_a: str | Path, store_b: str | Path) -> pd.DataFrame:
    """One row per key both stores hold as complete: the cell's columns, ``error_a``/``error_b``, ``ms_a``/``ms_b``."""
    frames = []
    for root, tag in ((store_a, "a"), (store_b, "b")):
        runs = runs_table(Store(root, create=False))
        if runs.empty:
            raise SystemExit(f"no run records in {root}")
        runs = runs[runs["status"] == "complete"].assign(device_name=runs.get("device_name", "unknown"))
        keep = {"error": f"error_{tag}", "ms_per_step": f"ms_{tag}", "device_name": f"device_{tag}"}
        cell = [c for c in (*CELL, "param_form", "seed") if c in runs]  # param_form: the cavity's
        frames.append(runs[["key", *cell, *keep]].rename(columns=keep))
    paired = frames[0].merge(frames[1][["key", "error_b", "ms_b", "device_b"]], on="key")
    if paired.empty:
        raise SystemExit(f"{store_a} and {store_b} hold no complete run with the same key")
    return paired.sort_values([*CELL, "seed"]).reset_index(drop=True)


def cell_comparison(paired: pd.DataFrame) -> pd.DataFrame:
    """Per cell: seeds compared, both means, their ratio (b over a), Welch's p, and the spread of the per-seed ratios."""
    rows = []
    for _, group in paired.groupby(CELL, sort=False):
        a, b = group["error_a"].to_numpy(float), group["error_b"].to_numpy(float)
        p = float(stats.ttest_ind(b, a, equal_var=False).pvalue) if len(a) > 1 else math.nan
        per_seed = b / a
        rows.append({"configuration": configuration_label(group.iloc[0]), "method": group["method"].iloc[0],
                     "backend": group["backend"].iloc[0], "n": len(a), "mean_a": a.mean(), "mean_b": b.mean(),
                     "ratio": b.mean() / a.mean(), "welch_p": p, "seed_ratio_min": per_seed.min(),
                     "seed_ratio_max": per_seed.max(), "ms_a": float(np.median(group["ms_a"])),
                     "ms_b": float(np.median(group["ms_b"]))})
    return pd.DataFrame(rows)


def report(paired: pd.DataFrame, cells: pd.DataFrame, label_a: str, label_b: str) -> str:
    """Markdown: the cell table, then every run."""
    devices = {label_a: sorted(set(paired["device_a"].astype(str))), label_b: sorted(set(paired["device_b"].astype(str)))}
    lines = [f"# The same runs on two machines: {label_a} and {label_b}", "",
             "Devices: " + "; ".join(f"{k} = {', '.join(v)}" for k, v in devices.items()) + ".", "",
             f"| configuration | method | backend | seeds | mean {label_a} | mean {label_b} | {label_b}/{label_a} "
             f"| Welch p | per-seed ratio, min-max | ms/step {label_a} | ms/step {label_b} |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells.itertuples(index=False):
        lines.append(f"| {c.configuration} | {c.method} | {c.backend} | {c.n} | {c.mean_a:.3e} | {c.mean_b:.3e} | "
                     f"{c.ratio:.3f} | {c.welch_p:.2f} | {c.seed_ratio_min:.2f}-{c.seed_ratio_max:.2f} | "
                     f"{c.ms_a:.2f} | {c.ms_b:.2f} |")
    lines += ["", "Step times are each run's median ms per vectorised step as its summary records it; runs that "
              "shared their machine with other jobs are slower than alone.", "",
              f"| run | error {label_a} | error {label_b} |", "|---|---|---|"]
    for r in paired.itertuples(index=False):
        lines.append(f"| {r.method} {r.width}x{r.depth} {r.backend} seed {r.seed} | {r.error_a:.4e} | {r.error_b:.4e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store_a")
    parser.add_argument("store_b")
    parser.add_argument("--label-a", default="a")
    parser.add_argument("--label-b", default="b")
    parser.add_argument("--out", type=Path, help="write the markdown here as well as printing it")
    args = parser.parse_args(argv)
    paired = paired_runs(args.store_a, args.store_b)
    text = report(paired, cell_comparison(paired), args.label_a, args.label_b)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
