"""Each seed trained in two backends, paired: how far apart the two runs end, and where they part.

    gradpath analyse backend-pairs [RESULTS] [--seeds 0 1 2] [--problem P] [--exclude LABEL ...]
        [--part 0.01]

e.g. Table 2's rows that PyTorch ran with 3 seeds:
``--seeds 0 1 2 --problem helmholtz --exclude "helmholtz 50x3"``.

RESULTS is a directory that ``gradpath report`` wrote (default ``results/paper``: runs.parquet,
history.parquet). Both backends train a seed from the same initial weights, normalisation and
batches, so two runs of one seed differ only by rounding, until a training history amplifies it.
For every configuration, method and seed complete in both backends this prints:
- per network kind (plain M1/M2, gated M3/M4) and device of the first backend's run: the number of
  pairs, how many end within 0.01%, 0.1%, 1% and 3%, and the largest gap;
- each pair more than 1% apart, and for those more than 3% apart the first logged step at which
  their histories differ by more than ``--part`` (and each run's error there);
- per cell, the second backend's mean over the first's, over the same seeds.
The report's "The backends side by side" gives the largest gap per cell; this gives every pair.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from gradpath.suite.analysis.paper_comparison import seed_pairs
from gradpath.suite.runs.restore import HISTORIES, RUNS

GATED = ("M3", "M4")  # methods on the gated network (gradpath.backends.methods)


def pairs(runs: pd.DataFrame, first: str = "jax", second: str = "torch", seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per (label, method, seed) complete in both backends: keys, errors, gap and the first's device."""
    if seeds is not None:
        runs = runs[runs["seed"].isin(seeds)]
    wide = seed_pairs(runs, first, second, values=("error", "key", "device_used"))
    out = pd.DataFrame({"error_a": wide[("error", first)].astype(float), "error_b": wide[("error", second)].astype(float),
                        "key_a": wide[("key", first)], "key_b": wide[("key", second)],
                        "device_a": wide[("device_used", first)]})
    out["gap"] = (out["error_b"] / out["error_a"] - 1).abs()
    return out.reset_index()


def parting_step(history: pd.DataFrame, key_a: str, key_b: str, metric: str, threshold: float) -> tuple[float, float, float]:
    """The first logged step at which the two histories' ``metric`` differ by more than ``threshold``
    (relative to the first's), with both values there; NaNs if they never do."""
    a = history[history["key"] == key_a].set_index("step")[metric]
    b = history[history["key"] == key_b].set_index("step")[metric]
    apart = ((b / a - 1).abs() > threshold).reindex(a.index.intersection(b.index))
    if not apart.any():
        return float("nan"), float("nan"), float("nan")
    step = apart[apart].index[0]
    return float(step), float(a[step]), float(b[step])


def report(paired: pd.DataFrame, history: pd.DataFrame, metric: str, threshold: float) -> str:
    """The three parts of the module docstring, as text."""
    paired = paired.assign(kind=paired["method"].map(lambda m: "gated" if m in GATED else "plain"))
    lines = [f"{len(paired)} pairs in {paired.groupby(['label', 'method']).ngroups} cells"]
    for (kind, device), g in paired.groupby(["kind", "device_a"]):
        within = ", ".join(f"<= {t:g}%: {int((g['gap'] <= t / 100).sum())}" for t in (0.01, 0.1, 1, 3))
        lines.append(f"{kind}, first backend on {device}: {len(g)} pairs; {within}; largest {100 * g['gap'].max():.3g}%")
    lines.append("pairs more than 1% apart:")
    for _, p in paired[paired["gap"] > 0.01].sort_values("gap").iterrows():
        where = ""
        if p["gap"] > 0.03:
            step, a, b = parting_step(history, p["key_a"], p["key_b"], metric, threshold)
            where = f"; part at step {step:.0f} (error {a:.3g} and {b:.3g})"
        lines.append(f"  {p['label']} {p['method']} seed {p['seed']}: {p['error_a']:.4g} and {p['error_b']:.4g}, "
                     f"{100 * p['gap']:.3g}% apart{where}")
    means = paired.groupby(["label", "method"])[["error_a", "error_b"]].mean()
    ratio = means["error_b"] / means["error_a"]
    lines.append(f"cell means over the paired seeds: {int(((ratio - 1).abs() <= 0.011).sum())} of {len(ratio)} "
                 f"within 1.1%; the others: " + ", ".join(f"{l} {m} {r:.3f}" for (l, m), r in ratio.items() if abs(r - 1) > 0.011))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    """Print the report of the module docstring for ``args`` (``gradpath analyse``'s options, gradpath.suite.cli.analyse)."""
    root = Path(args.results)
    runs, history = pd.read_parquet(root / RUNS), pd.read_parquet(root / HISTORIES)
    if args.problem:
        runs = runs[runs["problem"] == args.problem]
    paired = pairs(runs, seeds=args.seeds)
    paired = paired[~paired["label"].isin(args.exclude)]
    if paired.empty:
        raise SystemExit(f"no seed is complete in both backends in {root} with these filters")
    print(report(paired, history, args.metric, args.part))
