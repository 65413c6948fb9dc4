"""The output of a diagnostics preset: figures, ``numbers.json`` and a README.md beside the paper's claims.

The measured ratios (spec 8, 9):

- ``fig3``: max and mean |grad L_r| at the last checkpoint per C, relative to C = 1 (the paper's
  bound grows like C^4, eq. 15), and the imbalance mean|grad L_r| / mean|grad L_ub|.
- ``fig4``: the largest eigenvalues of the Hessians of L_r and L_ub and how many exceed 1e3.
- ``fig5`` / ``fig11``: sigma_max of the total loss, run A over run B: the geometric mean of the
  per-checkpoint ratios over training, and the ratio at the last checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from suite.diagnostic_plots import histogram_figure, sigma_max_figure, spectrum_figure
from suite.record import write_json

CLAIMS = {
    "fig3": "Fig. 3: the residual gradients grow with C and dominate the boundary gradients more and more "
            "(eqs. 14-15: ||grad L_r|| can grow like C^4, ||grad L_ub|| does not grow with C).",
    "fig4": "Fig. 4a: many eigenvalues of the Hessian of L_r are extremely large, up to about 1e5, while those of "
            "L_ub stay small; Fig. 4b: L_r oscillates, L_ub decreases.",
    "fig5": "Fig. 5: sigma_max of the Hessian of the total loss is higher for the stiff case a2 = 4 than for "
            "a2 = 1 throughout training (log axis 1e2-1e5; no number given).",
    "fig11": "Fig. 11: the gated network (M3) lowers the leading Hessian eigenvalue roughly 3x compared with M1.",
}


def _frame(result: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(result["history"])


def _last_stats(result: dict[str, Any]) -> dict[str, float]:
    """max and mean |grad| of each term at the last gradient checkpoint (over all recorded layers)."""
    frame = _frame(result)
    rows = frame.dropna(subset=[c for c in frame if c.startswith("grad_max_")][:1])
    last = rows.iloc[-1]
    out: dict[str, float] = {"step": int(last["step"])}
    for name in result["gradients"].terms:
        keys = result["gradients"].keys
        out[f"max_{name}"] = float(max(last[f"grad_max_{name}_{k}"] for k in keys))
        out[f"mean_{name}"] = float(np.mean([last[f"grad_mean_{name}_{k}"] for k in keys]))
    return out


def _sigma_ratio(a: dict[str, Any], b: dict[str, Any], term: str = "total") -> dict[str, float]:
    fa, fb = _frame(a), _frame(b)
    column = f"sigma_max_{term}"
    both = fa[["step", column]].dropna().merge(fb[["step", column]].dropna(), on="step", suffixes=("_a", "_b"))
    ratios = both[f"{column}_a"] / both[f"{column}_b"]
    return {"checkpoints": len(both), "geometric_mean_ratio": float(np.exp(np.log(ratios).mean())),
            "median_ratio": float(ratios.median()), "last_ratio": float(ratios.iloc[-1]),
            "min_ratio": float(ratios.min()), "max_ratio": float(ratios.max()),
            f"{a['label']}_geometric_mean": float(np.exp(np.log(both[f"{column}_a"]).mean())),
            f"{b['label']}_geometric_mean": float(np.exp(np.log(both[f"{column}_b"]).mean()))}


def _numbers(experiment: Any, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    name = experiment.name
    out: dict[str, Any] = {"runs": [{k: r[k] for k in ("label", "problem", "parameters", "method", "steps", "error",
                                                     "metric", "train_seconds", "compile_seconds", "wall_seconds")}
                                    for r in results]}
    if name == "fig3":
        stats = {r["label"]: _last_stats(r) for r in results}
        base = stats[results[0]["label"]]
        out["gradients_at_last_checkpoint"] = stats
        out["headline"] = {}
        for r in results:
            s = stats[r["label"]]
            out["headline"][f"max|grad L_r| {r['label']}/{results[0]['label']}"] = s["max_residual"] / base["max_residual"]
            out["headline"][f"imbalance {r['label']}"] = s["mean_residual"] / s["mean_boundary"]
    elif name == "fig4":
        spectra = results[0]["spectra"]
        out["spectra"] = {t: {"n": len(v), "max": float(v[-1]), "min": float(v[0]),
                              "count_above_1e3": int((v > 1e3).sum()), "count_above_1e2": int((v > 1e2).sum()),
                              "top5": [float(x) for x in v[-5:][::-1]]} for t, v in spectra.items()}
        out["headline"] = {f"largest eigenvalue of {t}": s["max"] for t, s in out["spectra"].items()}
        if {"residual", "boundary"} <= set(spectra):
            out["headline"]["ratio residual/boundary"] = spectra["residual"][-1] / spectra["boundary"][-1]
    else:
        a, b = results
        out["sigma_max"] = {t: _sigma_ratio(a, b, t) for t in experiment.hessian_terms}
        total = out["sigma_max"]["total"]
        out["headline"] = {f"sigma_max {a['label']}/{b['label']} (geometric mean over checkpoints)":
                           total["geometric_mean_ratio"], "at the last checkpoint": total["last_ratio"]}
    return out


def _figures(experiment: Any, results: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    files = []
    records = [(r["label"], r["gradients"]) for r in results if r["gradients"].steps]
    if records:
        files.append(histogram_figure(records, out / f"{experiment.name}-gradient-histograms.png"))
    if experiment.hessian_every:
        files.append(sigma_max_figure([(r["label"], _frame(r)) for r in results], experiment.hessian_terms,
                                      out / f"{experiment.name}-sigma-max.png", title=experiment.description))
    for r in results:
        if r["spectra"]:
            files.append(spectrum_figure(r["spectra"], _frame(r), out / f"{experiment.name}-spectra.png",
                                         title=experiment.description))
    return files


def _table(numbers: dict[str, Any]) -> list[str]:
    lines = ["| measured | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in numbers["headline"].items()]
    return lines


def write_report(experiment: Any, results: Sequence[dict[str, Any]], out: Path, *, backend: str, seed: int,
                 parameter_set: str) -> list[Path]:
    """Write the figures, ``numbers.json`` and ``README.md`` of a finished preset into ``out``."""
    out = Path(out)
    figures = _figures(experiment, results, out)
    numbers = _numbers(experiment, results)
    numbers.update(preset=experiment.name, backend=backend, seed=seed, parameter_set=parameter_set,
                   steps=experiment.steps, batch_size=experiment.batch_size, full_batch=experiment.full_batch,
                   gradient_every=experiment.gradient_every, hessian_every=experiment.hessian_every,
                   hessian_dtype=experiment.hessian_dtype, claim=CLAIMS[experiment.name])
    write_json(out / "numbers.json", numbers)
    command = f"gradpath diagnose {experiment.name} --backend {backend} --seed {seed}"
    if experiment.steps != 40000:
        command += f" --steps {experiment.steps}"
    if parameter_set != "weights":
        command += f" --parameter-set {parameter_set}"
    runs = "; ".join(f"{r['label']}: {r['problem']} {r['method']}, {r['metric']} {r['error']:.3e} after {r['steps']} "
                     f"steps ({r['train_seconds']:.0f} s of training steps)" for r in results)
    lines = [f"# {experiment.name}: {experiment.description}", "",
             f"Command: `{command}`; `--report-only` redraws the figures and this file from the runs.", "",
             f"Settings: {experiment.steps} Adam steps (the paper: 40,000), batch {experiment.batch_size} per region"
             + (" (one fixed set of points: full batch)" if experiment.full_batch else " (fresh points every step)")
             + f", float32 training; gradients every {experiment.gradient_every} steps"
             + (f", sigma_max by Lanczos every {experiment.hessian_every} steps on that step's batch"
                if experiment.hessian_every else "")
             + (f", dense spectra of {', '.join(experiment.spectrum_terms)} at the last step"
                if experiment.spectrum_terms else "")
             + f"; Hessians in {experiment.hessian_dtype} w.r.t. the {parameter_set} parameter set.", "",
             f"Runs: {runs}.", "", f"Paper: {CLAIMS[experiment.name]}", "", "Ours:", "", *_table(numbers), "",
             "Files: " + ", ".join(f"`{p.name}`" for p in figures) + ", `numbers.json` (every number above and "
             "more), and per run `history.csv` (losses, error, gradient statistics and sigma_max at the "
             "checkpoints), `gradients.npz` (histograms), `params.npz`"
             + (", `spectra.npz`" if any(r["spectra"] for r in results) else "") + ".", ""]
    (out / "README.md").write_text("\n".join(lines))
    return [*figures, out / "numbers.json", out / "README.md"]
