"""The core engine's measured numbers (issue 2), side by side in one run, on one device.

    python -m gradpath.suite.perf.core_check --device cpu  --out results/core/cpu
    python -m gradpath.suite.perf.core_check --device cuda --out results/core/cuda

Writes ``core_check.json`` and ``core_check.md`` in ``--out``:
  * speed: Helmholtz [2,50,50,50,1], float32, batch 128, M1-M4 in every backend, interleaved
    backend by backend: median ms/step over chunks of 100 steps (device-synchronised after each
    chunk), compile seconds apart;
  * accuracy: relative L2 after ``--accuracy-steps`` steps for M1 and M4 over ``--seeds`` seeds;
  * on cuda also correctness: float64 first 100 steps, cuda vs cpu in each backend and
    torch-cuda vs jax-cuda (max relative differences of losses, lambdas, gradients, parameters).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from gradpath.backends import get_backend
from gradpath.backends.replay import replay
from gradpath.backends.settings import TrainSettings
from gradpath.backends.training import train
from gradpath.problems import get_problem


def correctness(backends: list[str]) -> list[dict]:
    """float64 replays: cuda vs cpu per backend, torch vs jax on cuda (torch eager: same maths as
    its compiled graphs, which are compared with eager on cuda once, for M4)."""
    rows = []
    problem = get_problem("helmholtz")
    for method in ("M1", "M4"):
        settings = TrainSettings(method=method, dtype="float64", seed=1, compile=False)
        runs = {(b, d): replay(b, problem, settings, device=d) for b in backends for d in ("cpu", "cuda")}
        pairs = [((b, "cuda"), (b, "cpu")) for b in backends]
        if "torch" in backends and method == "M4":
            runs[("torch", "cuda", "compiled")] = replay("torch", problem, replace(settings, compile=True), device="cuda")
            pairs.append((("torch", "cuda", "compiled"), ("torch", "cuda")))
        if len(backends) == 2:
            pairs.append((("torch", "cuda"), ("jax", "cuda")))
        for a, b in pairs:
            rows.append({"compare": f"{' '.join(a)} vs {' '.join(b)}", "method": method,
                         **runs[a].max_relative_difference(runs[b])})
            print(rows[-1], flush=True)
    return rows


def speed(backends: list[str], steps: int, device: str) -> list[dict]:
    rows = []
    for method in ("M1", "M2", "M3", "M4"):
        for b in backends:
            s = train(get_problem("helmholtz"), TrainSettings(method=method, steps=steps, device=device, compile="on"), b).summary
            rows.append({"backend": b, "method": method, "ms_per_step": s["ms_per_step"],
                         "compile_seconds": s["compile_seconds"], "steps": s["steps"], "device_name": s["device_name"]})
            print(rows[-1], flush=True)
    return rows


def accuracy(backends: list[str], steps: int, seeds: int, device: str) -> list[dict]:
    rows = []
    for method in ("M1", "M4"):
        for b in backends:
            errors = [train(get_problem("helmholtz"), TrainSettings(method=method, steps=steps, seed=seed,
                                                                    device=device, compile="on"), b).summary["error"]
                      for seed in range(seeds)]
            rows.append({"backend": b, "method": method, "steps": steps, "errors": errors,
                         "mean": statistics.fmean(errors)})
            print(rows[-1], flush=True)
    return rows


def markdown(report: dict) -> str:
    lines = [f"# Core engine on {report['device']} ({report['device_name']})", "",
             f"Command: `{report['command']}` on host `{report['host']}`, {report['when']}.",
             f"Versions: {report['versions']}.", ""]
    if report.get("correctness"):
        lines += ["## float64, first 100 steps: max relative difference", "",
                  "| compare | method | losses | lambdas | gradients | params |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['compare']} | {r['method']} | {r['losses']:.1e} | {r['weights']:.1e} | "
                  f"{r['gradients']:.1e} | {r['params']:.1e} |" for r in report["correctness"]]
        lines.append("")
    lines += [f"## Speed: Helmholtz [2,50,50,50,1], float32, batch 128, {report['speed_steps']} steps", "",
              "| method | " + " | ".join(f"{b} ms/step | {b} compile s" for b in report["backends"]) + " |",
              "|---|" + "---|---|" * len(report["backends"])]
    for method in ("M1", "M2", "M3", "M4"):
        cells = [r for b in report["backends"] for r in report["speed"] if r["backend"] == b and r["method"] == method]
        lines.append(f"| {method} | " + " | ".join(f"{r['ms_per_step']:.2f} | {r['compile_seconds']:.1f}" for r in cells) + " |")
    if not report["accuracy"]:
        return "\n".join(lines) + "\n"
    lines += ["", f"## Accuracy: relative L2 after {report['accuracy_steps']} steps, seeds 0-{report['seeds'] - 1}", "",
              "| backend | method | mean | per seed |", "|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['method']} | {r['mean']:.3e} | {', '.join(f'{e:.3e}' for e in r['errors'])} |"
              for r in report["accuracy"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--backends", default="jax,torch")
    parser.add_argument("--speed-steps", type=int, default=2001)
    parser.add_argument("--accuracy-steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    backends = args.backends.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(sys.argv), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "host": platform.node(), "device": args.device, "backends": backends,
              "device_name": get_backend(backends[0]).device_name(args.device),
              "versions": {k: v for b in backends for k, v in get_backend(b).versions().items()},
              "speed_steps": args.speed_steps, "accuracy_steps": args.accuracy_steps, "seeds": args.seeds}

    def save() -> None:
        (args.out / "core_check.json").write_text(json.dumps(report, indent=1))

    if args.device == "cuda":
        report["correctness"] = correctness(backends)
        save()
    report["speed"] = speed(backends, args.speed_steps, args.device)
    save()
    report["accuracy"] = accuracy(backends, args.accuracy_steps, args.seeds, args.device) if args.seeds else []
    save()
    (args.out / "core_check.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
