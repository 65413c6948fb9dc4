"""The output of a diagnostics preset: figures, ``numbers.json`` and a README.md beside the paper's claims.

Every number is measured per seed and then summarised over the seeds (median, min, max; with
one seed these are its value). The measured quantities (spec 8, 9):

- ``fig3``: max and mean |grad| of each term at the last checkpoint per C: max|grad L_r| and
  max|grad L_ub| relative to the first C (the paper's bound on ||grad L_r|| grows like C^4 and
  its ||grad L_ub|| does not grow, eqs. 14-15), and the imbalance mean|grad L_r| / mean|grad L_ub|.
- ``fig4``: the largest eigenvalues of the Hessians of L_r and L_ub and how many exceed 1e3
  (Fig. 4a), and how each loss moves over training (Fig. 4b, :func:`loss_movement`).
- ``fig5`` / ``fig11``: sigma_max of the total loss, run A over run B: the geometric mean of the
  per-checkpoint ratios over training and the ratio at the last checkpoint; and the range of
  our sigma_max against the y axis of the paper's figure (:data:`PAPER_SIGMA_AXIS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from gradpath.suite.diagnostics.plots import LOSS_LABELS, histogram_figure, losses_figure, sigma_max_figure, spectrum_figure
from gradpath.suite.runs.record import write_json

CLAIMS = {
    "fig3": "Fig. 3: the residual gradients grow with C and dominate the boundary gradients more and more "
            "(eqs. 14-15: ||grad L_r|| can grow like C^4, ||grad L_ub|| does not grow with C).",
    "fig4": "Fig. 4a: many eigenvalues of the Hessian of L_r are extremely large, up to about 1e5, while those of "
            "L_ub stay small; Fig. 4b: L_r oscillates, L_ub decreases.",
    "fig5": "Fig. 5: sigma_max of the Hessian of the total loss is higher for the stiff case a2 = 4 than for "
            "a2 = 1 throughout training (log axis 1e2-1e5; no number given).",
    "fig11": "Fig. 11: the gated network (M3) lowers the leading Hessian eigenvalue roughly 3x compared with M1.",
}
# The y axis of the paper's Figs. 5 and 11 (sigma_max, log scale from 10^2 to 10^5): the only
# magnitudes the paper shows, so ours are compared with it.
PAPER_SIGMA_AXIS = (1e2, 1e5)
# Running median of the losses in fig4-losses.png: 21 logged steps (2,100 steps at the log interval of 100)
LOSS_TREND_WINDOW = 21
# How often a loss may rise between logged steps and still read as decreasing, and how often it
# must rise to read as oscillating (a loss that only falls rises at 0 of its intervals, noise at 1/2).
STEADY_RISES, OSCILLATING_RISES = 0.05, 0.25


def _frame(result: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(result["history"])


def _symbol(term: str) -> str:
    return LOSS_LABELS.get(term, f"L_{term}")


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


def loss_movement(history: pd.DataFrame, term: str) -> dict[str, float]:
    """How a loss term moves between its logged steps: oscillation against trend (Fig. 4b).

    Returns:
        ``intervals`` (consecutive logged pairs), ``rising_fraction`` (the share of them in which
        the loss rose: 0 for a loss that only falls), ``median_step_decades`` (median
        |log10 L(t+1) - log10 L(t)|), ``kendall_tau`` (scipy's rank correlation of the loss with
        the step: -1 for a loss that only falls), ``first_tenth_median`` and ``last_tenth_median``
        (the loss's median over the first and the last tenth of the logged steps) and
        ``net_change_decades`` (log10 of their ratio: the trend, robust to the oscillation).
    """
    data = history[["step", f"loss_{term}"]].dropna()
    loss = data[f"loss_{term}"].to_numpy(np.float64)
    logs = np.log10(loss)
    moves = np.diff(logs)
    tenth = max(len(loss) // 10, 1)
    first, last = float(np.median(loss[:tenth])), float(np.median(loss[-tenth:]))
    return {"intervals": len(moves), "rising_fraction": float((moves > 0).mean()),
            "median_step_decades": float(np.median(np.abs(moves))),
            "kendall_tau": float(stats.kendalltau(data["step"], loss).statistic),
            "first_tenth_median": first, "last_tenth_median": last,
            "net_change_decades": float(np.log10(last / first))}


def _movement_words(move: dict[str, float]) -> str:
    """A reading of :func:`loss_movement` in words, by the thresholds STEADY_RISES and OSCILLATING_RISES."""
    if move["rising_fraction"] >= OSCILLATING_RISES:
        return "oscillates"
    if move["rising_fraction"] < STEADY_RISES and move["net_change_decades"] < 0:
        return "decreases steadily"
    return "mostly decreases" if move["net_change_decades"] < 0 else "does not decrease"


# -- per seed --------------------------------------------------------------------------------------

def _gradient_numbers(runs: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
    """fig3: each term's gradients at the last checkpoint, per run, relative to the first run."""
    stats_by_run = {r["label"]: _last_stats(r) for r in runs}
    base = stats_by_run[runs[0]["label"]]
    terms = runs[0]["gradients"].terms
    headline: dict[str, float] = {}
    for r in runs[1:]:
        s = stats_by_run[r["label"]]
        for term in terms:
            key = f"max|grad {_symbol(term)}| {r['label']}/{runs[0]['label']}"
            headline[key] = s[f"max_{term}"] / base[f"max_{term}"]
    for r in runs:
        s = stats_by_run[r["label"]]
        headline[f"imbalance {r['label']}"] = s[f"mean_{terms[0]}"] / s[f"mean_{terms[1]}"]
    return {"gradients_at_last_checkpoint": stats_by_run}, headline


def _spectrum_numbers(runs: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
    """fig4: the dense spectra at the last step (4a) and how the losses moved during training (4b)."""
    run = runs[0]
    spectra = run["spectra"]
    details: dict[str, Any] = {
        "spectra": {t: {"n": len(v), "max": float(v[-1]), "min": float(v[0]),
                        "count_above_1e3": int((v > 1e3).sum()), "count_above_1e2": int((v > 1e2).sum()),
                        "top5": [float(x) for x in v[-5:][::-1]]} for t, v in spectra.items()}}
    headline = {f"largest eigenvalue of {t}": s["max"] for t, s in details["spectra"].items()}
    if {"residual", "boundary"} <= set(spectra):
        headline["ratio residual/boundary"] = float(spectra["residual"][-1] / spectra["boundary"][-1])
    frame = _frame(run)
    terms = [t for t in spectra if f"loss_{t}" in frame]
    details["loss_movement"] = {t: loss_movement(frame, t) for t in terms}
    for t in terms:
        move = details["loss_movement"][t]
        headline[f"{_symbol(t)}: share of logged intervals in which it rose"] = move["rising_fraction"]
        headline[f"{_symbol(t)}: net change, decades (last vs first tenth)"] = move["net_change_decades"]
    return details, headline


def _sigma_numbers(experiment: Any, runs: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
    """fig5, fig11: sigma_max of the first run over the second's, per loss, at the shared checkpoints."""
    a, b = runs
    details = {"sigma_max": {t: _sigma_ratio(a, b, t) for t in experiment.hessian_terms}}
    total = details["sigma_max"]["total"]
    headline = {f"sigma_max {a['label']}/{b['label']} (geometric mean over checkpoints)": total["geometric_mean_ratio"],
                "at the last checkpoint": total["last_ratio"]}
    return details, headline


def _spread(values: dict[int, float]) -> dict[str, Any]:
    """Median, min and max over seeds of one number, with each seed's value."""
    array = np.array(list(values.values()), np.float64)
    return {"median": float(np.median(array)), "min": float(array.min()), "max": float(array.max()),
            "seeds": len(array), "per_seed": {str(s): float(v) for s, v in values.items()}}


def sigma_max_range(experiment: Any, by_seed: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Our sigma_max of the total loss over all checkpoints and seeds per run, against the paper's y axis.

    Returns:
        Per run label: ``min``, ``median``, ``max`` over the pooled checkpoints, ``checkpoints``,
        and ``median_over_axis_top`` / ``max_over_axis_top``: how far above the top of the
        paper's axis (:data:`PAPER_SIGMA_AXIS`) our median and largest value lie (below 1: inside).
    """
    low, top = PAPER_SIGMA_AXIS
    out: dict[str, Any] = {"paper_axis": [low, top]}
    for index, plan in enumerate(experiment.runs):
        values = np.concatenate([_frame(runs[index])["sigma_max_total"].dropna().to_numpy(np.float64)
                                 for runs in by_seed.values()])
        out[plan.label] = {"min": float(values.min()), "median": float(np.median(values)),
                           "max": float(values.max()), "checkpoints": int(values.size),
                           "median_over_axis_top": float(np.median(values) / top),
                           "max_over_axis_top": float(values.max() / top)}
    return out


def _group(experiment: Any, results: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """The results by seed, each seed's runs in the preset's order."""
    order = [plan.label for plan in experiment.runs]
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_seed.setdefault(int(r.get("seed", 0)), []).append(r)
    return {s: sorted(runs, key=lambda r: order.index(r["label"])) for s, runs in by_seed.items()}


def _numbers(experiment: Any, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    name = experiment.name
    by_seed = _group(experiment, results)
    out: dict[str, Any] = {"runs": [{k: r.get(k) for k in ("label", "seed", "problem", "parameters", "method",
                                                           "steps", "error", "metric", "train_seconds",
                                                           "compile_seconds", "wall_seconds")}
                                    for runs in by_seed.values() for r in runs],
                           "seeds": list(by_seed), "per_seed": {}}
    for seed, runs in by_seed.items():
        if name == "fig3":
            details, headline = _gradient_numbers(runs)
        elif name == "fig4":
            details, headline = _spectrum_numbers(runs)
        else:
            details, headline = _sigma_numbers(experiment, runs)
        out["per_seed"][str(seed)] = {**details, "headline": headline}
    keys = next(iter(out["per_seed"].values()))["headline"]
    out["spread"] = {k: _spread({s: out["per_seed"][str(s)]["headline"][k] for s in by_seed}) for k in keys}
    out["headline"] = {k: v["median"] for k, v in out["spread"].items()}
    if experiment.hessian_every and name != "fig4":
        out["sigma_max_range"] = sigma_max_range(experiment, by_seed)
    return out


# -- statements: the measured numbers in words, beside the paper's --------------------------------

def _gradient_statement(experiment: Any, numbers: dict[str, Any]) -> list[str]:
    """fig3: how max|grad L_r| and max|grad L_ub| grow with C, against C^4 and the paper's 'does not grow'."""
    first = next(iter(numbers["per_seed"].values()))
    labels = list(first["gradients_at_last_checkpoint"])
    step = first["gradients_at_last_checkpoint"][labels[0]]["step"]
    c0 = experiment.runs[0].parameters.get("C")
    head = numbers["headline"]
    lines = []
    for term in ("residual", "boundary"):
        growth = [head[f"max|grad {_symbol(term)}| {label}/{labels[0]}"] for label in labels[1:]]
        text = " and ".join(f"{g:.3g}x ({label})" for g, label in zip(growth, labels[1:]))
        if term == "residual":
            powers = (" (C^4 ratios: " + ", ".join(f"{(plan.parameters['C'] / c0) ** 4:g}"
                                                   for plan in experiment.runs[1:]) + ")" if c0 else "")
            lines.append(f"At step {step}, max|grad L_r| is {text} that of {labels[0]}{powers}.")
        else:
            verdict = ("the boundary gradients grow with C as well, unlike the paper's statement that "
                       "||grad L_ub|| does not grow" if max(growth) > 2 else
                       "within 2x: no growth with C, as the paper states")
            lines.append(f"max|grad L_ub| is {text} that of {labels[0]}: {verdict}.")
    imbalance = ", ".join(f"{head[f'imbalance {label}']:.3g} at {label}" for label in labels)
    lines.append(f"The imbalance mean|grad L_r| / mean|grad L_ub| is {imbalance}: the residual's gradients "
                 + ("outgrow the boundary's." if head[f"imbalance {labels[-1]}"] > head[f"imbalance {labels[0]}"]
                    else "do not outgrow the boundary's."))
    return lines


def _movement_statement(numbers: dict[str, Any]) -> list[str]:
    """fig4: Fig. 4b in words, from :func:`loss_movement` of each term."""
    first = next(iter(numbers["per_seed"].values()))
    moves = first["loss_movement"]
    if not moves:
        return []
    n = next(iter(moves.values()))["intervals"]
    parts = [f"{_symbol(t)} {_movement_words(m)}: it rose in {m['rising_fraction']:.1%} of the intervals, moved a "
             f"median {m['median_step_decades']:.2g} decades per interval (Kendall tau of loss vs step "
             f"{m['kendall_tau']:.2f}) and changed {m['net_change_decades']:+.2f} decades from the first tenth of "
             f"training to the last ({m['first_tenth_median']:.3g} to {m['last_tenth_median']:.3g})"
             for t, m in moves.items()]
    return [f"Fig. 4b from the logged losses ({n} intervals between logged steps, `fig4-losses.png`): "
            + "; ".join(parts) + f". ('oscillates': rose in at least {OSCILLATING_RISES:.0%} of the intervals; "
            f"'decreases steadily': in under {STEADY_RISES:.0%} and fell overall.)"]


def _sigma_statement(experiment: Any, numbers: dict[str, Any]) -> list[str]:
    """fig5, fig11: the spread of the ratio over seeds, and our sigma_max against the paper's axis."""
    spans = numbers["sigma_max_range"]
    low, top = spans["paper_axis"]
    key = next(iter(numbers["spread"]))
    spread = numbers["spread"][key]
    lines = ([f"Over {spread['seeds']} seeds, {key} has median {spread['median']:.3g}, range "
              f"{spread['min']:.3g} to {spread['max']:.3g}."] if spread["seeds"] > 1 else [])
    parts = []
    for plan in experiment.runs:
        s = spans[plan.label]
        if s["median"] > top:
            where = (f"median {s['median_over_axis_top']:.2g}x and largest {s['max_over_axis_top']:.2g}x the "
                     "axis top")
        else:
            where = "median " + ("below the axis" if s["median"] < low else "inside the axis") + (
                f", largest {s['max_over_axis_top']:.2g}x the axis top" if s["max"] > top else "")
        parts.append(f"{plan.label} {s['min']:.3g} to {s['max']:.3g} (median {s['median']:.3g}: {where})")
    lines.append(f"Magnitudes: the paper's figure shows sigma_max only on its log y axis from {_decade(low)} to "
                 f"{_decade(top)}, its curves drawn within it, no number printed. Ours, the total loss's sigma_max "
                 f"over all checkpoints and seeds: " + "; ".join(parts) + ".")
    return lines


def _decade(value: float) -> str:
    """A power of ten as the paper's axes write it: 1e5."""
    return f"1e{round(np.log10(value))}"


# -- files -----------------------------------------------------------------------------------------

def _figures(experiment: Any, by_seed: dict[int, list[dict[str, Any]]], out: Path) -> list[Path]:
    files = []
    first = next(iter(by_seed.values()))  # histograms, spectra and loss curves: of the first seed
    records = [(r["label"], r["gradients"]) for r in first if r["gradients"].steps]
    if records:
        files.append(histogram_figure(records, out / f"{experiment.name}-gradient-histograms.png"))
    if experiment.hessian_every:
        histories = [(plan.label, [_frame(runs[i]) for runs in by_seed.values()])
                     for i, plan in enumerate(experiment.runs)]
        files.append(sigma_max_figure(histories, experiment.hessian_terms, out / f"{experiment.name}-sigma-max.png",
                                      title=experiment.description, paper_range=PAPER_SIGMA_AXIS))
    for r in first:
        if r["spectra"]:
            run = f"{experiment.name}, {r['label']}, seed {r.get('seed', 0)}"
            files.append(spectrum_figure(r["spectra"], out / f"{experiment.name}-spectra.png",
                                         title=f"{run}: the Hessians at step {r['steps']}"))
            files.append(losses_figure(_frame(r), list(r["spectra"]), out / f"{experiment.name}-losses.png",
                                       window=LOSS_TREND_WINDOW, title=f"{run}: the losses over training"))
    return files


def _cell(text: str) -> str:
    """A markdown table cell: ``|`` (as in max|grad L_r|) escaped so that it does not split the cell."""
    return str(text).replace("|", "\\|")


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(numbers: dict[str, Any]) -> list[str]:
    seeds = numbers["seeds"]
    if len(seeds) == 1:
        lines = ["| measured | value |", "| --- | --- |"]
        return lines + [f"| {_cell(k)} | {_format(v)} |" for k, v in numbers["headline"].items()]
    lines = ["| measured | median | min | max | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "| --- " * (4 + len(seeds)) + "|"]
    for k, s in numbers["spread"].items():
        lines.append(f"| {_cell(k)} | {_format(s['median'])} | {_format(s['min'])} | {_format(s['max'])} | "
                     + " | ".join(_format(s["per_seed"][str(seed)]) for seed in seeds) + " |")
    return lines


def _runs_table(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| seed | run | problem, method | error | steps | training steps (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    return lines + [f"| {r.get('seed', 0)} | {r['label']} | {r['problem']} {r['method']} | {r['metric']} "
                    f"{r['error']:.3e} | {r['steps']} | {r['train_seconds']:.0f} |" for r in results]


def write_diagnostics_report(experiment: Any, results: Sequence[dict[str, Any]], out: Path, *, backend: str,
                 seeds: Sequence[int] | None = None, missing_seeds: Sequence[int] = (),
                 parameter_set: str) -> list[Path]:
    """Write the figures, ``numbers.json`` and ``README.md`` of a finished preset into ``out``.

    Args:
        results: every run of every seed, as :func:`gradpath.suite.diagnostics.experiments.train_plan` returns them (with ``seed``).
        seeds: the seeds the results hold (default: read from them); missing_seeds: seeds asked
            for but without complete runs (named in the README and in ``numbers.json``).
    """
    out = Path(out)
    by_seed = _group(experiment, results)
    seeds = list(by_seed) if seeds is None else list(seeds)
    figures = _figures(experiment, by_seed, out)
    numbers = _numbers(experiment, results)
    numbers.update(preset=experiment.name, backend=backend, parameter_set=parameter_set,
                   missing_seeds=list(missing_seeds), steps=experiment.steps, batch_size=experiment.batch_size,
                   full_batch=experiment.full_batch,
                   gradient_every=experiment.gradient_every, hessian_every=experiment.hessian_every,
                   hessian_dtype=experiment.hessian_dtype, claim=CLAIMS[experiment.name])
    if experiment.name == "fig3":
        statement = _gradient_statement(experiment, numbers)
    elif experiment.name == "fig4":
        statement = _movement_statement(numbers)
    else:
        statement = _sigma_statement(experiment, numbers) if "sigma_max_range" in numbers else []
    numbers["statement"] = statement
    write_json(out / "numbers.json", numbers)
    seed_list = " ".join(map(str, seeds))
    command = f"gradpath diagnose {experiment.name} --backend {backend} --seeds {seed_list}"
    if experiment.steps != 40000:
        command += f" --steps {experiment.steps}"
    if parameter_set != "weights":
        command += f" --parameter-set {parameter_set}"
    seeds_line = (f"Seeds: {', '.join(map(str, seeds))}; each run's directory is `<label>` for seed 0 and "
                  "`<label>-seed-N` for seed N."
                  + (f" Seeds asked for without complete runs, left out of every number and figure: "
                     f"{', '.join(map(str, missing_seeds))}." if missing_seeds else "")
                  + (" Numbers are measured per seed; the table gives their median, min and max over the seeds."
                     if len(seeds) > 1 else ""))
    ordered = [r for runs in by_seed.values() for r in runs]
    lines = [f"# {experiment.name}: {experiment.description}", "",
             f"Command: `{command}` (a seed whose runs are complete is read back, not trained again); "
             "`--report-only` redraws the figures and this file from the runs.", "",
             f"Settings: {experiment.steps} Adam steps (the paper: 40,000), batch {experiment.batch_size} per region"
             + (" (one fixed set of points: full batch)" if experiment.full_batch else " (fresh points every step)")
             + f", float32 training; gradients every {experiment.gradient_every} steps"
             + (f", sigma_max by Lanczos every {experiment.hessian_every} steps on that step's batch"
                if experiment.hessian_every else "")
             + (f", dense spectra of {', '.join(experiment.spectrum_terms)} at the last step"
                if experiment.spectrum_terms else "")
             + f"; Hessians in {experiment.hessian_dtype} w.r.t. the {parameter_set} parameter set.", "",
             seeds_line, "", "Runs:", "", *_runs_table(ordered), "",
             f"Paper: {CLAIMS[experiment.name]}", "", "Ours:", "", *_table(numbers), "",
             *[line for s in statement for line in (s, "")],
             "Files: " + ", ".join(f"`{p.name}`" for p in figures)
             + (f" (histograms{', spectra and losses' if experiment.spectrum_terms else ''} of seed {seeds[0]}; "
                "sigma_max as the median over seeds with their min-max band)" if len(seeds) > 1 else "")
             + ", `numbers.json` (every number above, per seed, and more), and per run `history.csv` (losses, "
             "error, gradient statistics and sigma_max at the checkpoints), `gradients.npz` (histograms), "
             "`params.npz`" + (", `spectra.npz`" if any(r["spectra"] for r in results) else "") + ".", ""]
    (out / "README.md").write_text("\n".join(lines))
    return [*figures, out / "numbers.json", out / "README.md"]
