"""The report of ``gradpath bench``: targets, ratios, and the table as markdown, CSV and JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

# Issue 6's targets: Helmholtz [2,50,50,50,1], batch 128, float32, on this project's 2-core CPU
MS_PER_STEP_TARGET = {"jax": 1.0, "torch": 2.0}  # M1, ms/step
RATIO_TARGET = {"M2": 1.15, "M4": 1.7}  # ms/step relative to M1 of the same backend
DEEPXDE_GOAL = 5.0  # DeepXDE's ms/step over ours, per framework
DEEPXDE_FRAMEWORK = {"torch": "pytorch", "jax": "jax"}  # our backend -> DDE_BACKEND
TARGET_PROBLEM = "helmholtz"



def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """M2/M1 and M4/M1 per backend and problem, with the targets they are held to."""
    by = {(r["problem"], r["backend"], r["method"]): r["ms_per_step"] for r in rows}
    out = []
    for (problem, backend, method), ms in by.items():
        m1 = by.get((problem, backend, "M1"))
        if method in RATIO_TARGET and m1:
            out.append({"problem": problem, "backend": backend, "ratio": f"{method}/M1", "value": ms / m1,
                        "target": RATIO_TARGET[method], "met": ms / m1 <= RATIO_TARGET[method]})
    return out


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's absolute M1 targets (Helmholtz, CPU); they say nothing about GPUs."""
    return [{"backend": r["backend"], "ms_per_step": r["ms_per_step"], "target": MS_PER_STEP_TARGET[r["backend"]],
             "met": r["ms_per_step"] <= MS_PER_STEP_TARGET[r["backend"]]}
            for r in rows if r["problem"] == TARGET_PROBLEM and r["method"] == "M1" and r["device"] == "cpu"
            and r["backend"] in MS_PER_STEP_TARGET]


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """The report as one markdown document: the side-by-side table, ratios, targets, DeepXDE."""
    lines = [f"# gradpath bench: {report['when']}", "",
             f"Command: `{report['command']}`; host `{report['host']}` ({report['machine']['cpu']}, "
             f"{report['machine']['cpus']} CPUs), load average before {report['machine']['load_before']}.",
             f"Versions: {report['versions']}. {report['steps']} steps per run in chunks of {report['log_every']}, "
             f"{report['repeats']} fresh process(es) per row, float32, batch 128.", "",
             "| problem | backend | method | device | median ms/step | IQR ms | compile s | peak RSS MiB | peak device MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['problem']} | {r['backend']} | {r['method']} | {r['device']} | {r['ms_per_step']:.3f} | "
                     f"{r['iqr_ms']:.3f} | {r['compile_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                     f"{_fmt(r['peak_device_mib'], '.0f')} |")
    if report["ratios"]:
        lines += ["", "| problem | backend | ratio | value | target | met |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['problem']} | {r['backend']} | {r['ratio']} | {r['value']:.2f} | <= {r['target']} | "
                  f"{'yes' if r['met'] else 'no'} |" for r in report["ratios"]]
    if report["targets"]:
        lines += ["", "| M1 target (Helmholtz, CPU) | ms/step | target | met |", "|---|---|---|---|"]
        lines += [f"| {r['backend']} | {r['ms_per_step']:.3f} | <= {r['target']} | {'yes' if r['met'] else 'no'} |"
                  for r in report["targets"]]
    if report["deepxde"]:
        lines += ["", "| DeepXDE backend | DeepXDE ms/step | ours (M1) ms/step | DeepXDE / ours | goal |",
                  "|---|---|---|---|---|"]
        lines += [f"| {d['framework']} ({d['deepxde_version']}) | {d['deepxde_ms']:.2f} | {d['ours_ms']:.3f} | "
                  f"{d['ratio']:.1f}x | >= {d['goal']:.0f}x ({'met' if d['met'] else 'not met'}) |"
                  for d in report["deepxde"]]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("problem", "backend", "method", "device", "ms_per_step", "iqr_ms", "chunks", "compile_s",
              "peak_rss_mib", "rss_delta_mib", "peak_device_mib", "error", "device_name")


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """``bench.json`` (everything, machine and versions included), ``bench.csv`` (the rows), ``bench.md``."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "bench.json", out / "bench.csv", out / "bench.md"]
    files[0].write_text(json.dumps(report, indent=1) + "\n")
    with files[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["rows"])
    files[2].write_text(markdown(report))
    return files
