"""Seed-vectorised training against the same seeds one after the other, side by side in one run.

    python -m gradpath.suite.perf.seed_throughput [--device cpu|cuda] [--seeds 10] [--steps 2000]
        [--backend jax --backend torch] [--method M1 --method M4] [--out results/perf/seeds-cpu]

For each backend and method, in fresh processes one after the other (so neither inherits the
other's compiled code or caches, and peaks are per process):

- ``sequential``: ``--seeds`` runs of ``gradpath.backends.training.train``, one after the other, each
  compiling its own step (as ``--lanes 1`` campaigns do, minus process start-up);
- ``vectorised``: the same seeds in one ``gradpath.backends.training.train_seeds`` call (``--lanes N``).

It prints and writes the wall time of each (compile, training and evaluation: what a user
waits for), the training time alone, the step time per seed, and the ratios sequential /
vectorised (the throughput gain). The runs are the same runs (tests/test_seed_vectorised.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def _child(mode: str, backend: str, method: str, seeds: int, steps: int, device: str) -> dict:
    """One measurement, in this (fresh) process."""
    from gradpath.backends.settings import TrainSettings
    from gradpath.backends.training import train, train_seeds
    from gradpath.problems import get_problem

    problem = get_problem("helmholtz")
    settings = [TrainSettings(method=method, seed=s, steps=steps, log_every=min(500, steps), device=device,
                              compile="on")
                for s in range(seeds)]
    t0 = time.perf_counter()
    if mode == "vectorised":
        results = train_seeds(problem, settings, backend)
    else:
        results = [train(problem, s, backend) for s in settings]
    wall = time.perf_counter() - t0
    train_s = results[0].summary["train_seconds"] if mode == "vectorised" else \
        sum(r.summary["train_seconds"] for r in results)
    compile_s = results[0].summary["compile_seconds"] if mode == "vectorised" else \
        sum(r.summary["compile_seconds"] for r in results)
    return {"wall_s": wall, "train_s": train_s, "compile_s": compile_s,
            "ms_per_seed_step": 1e3 * train_s / (steps * seeds),
            "errors": [r.summary["error"] for r in results], "device_name": results[0].summary["device_name"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--backend", action="append", choices=("jax", "torch"))
    parser.add_argument("--method", action="append", choices=("M1", "M2", "M3", "M4"))
    parser.add_argument("--out", help="directory for seed_throughput.csv/.md/.json (default: print only)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, backend, method, seeds, steps, device = args.child
        print(json.dumps(_child(mode, backend, method, int(seeds), int(steps), device)))
        return 0

    rows = []
    for backend in args.backend or ["jax", "torch"]:
        for method in args.method or ["M1", "M4"]:
            row = {"backend": backend, "method": method, "seeds": args.seeds, "steps": args.steps}
            for mode in ("sequential", "vectorised"):
                cmd = [sys.executable, "-m", "gradpath.suite.perf.seed_throughput", "--child", mode, backend, method,
                       str(args.seeds), str(args.steps), args.device]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                out = json.loads(done.stdout.strip().splitlines()[-1])
                row["device_name"] = out["device_name"]
                for k in ("wall_s", "train_s", "compile_s", "ms_per_seed_step"):
                    row[f"{mode}_{k}"] = out[k]
                row[f"{mode}_errors"] = out["errors"]
            row["wall_ratio"] = row["sequential_wall_s"] / row["vectorised_wall_s"]
            row["step_ratio"] = row["sequential_ms_per_seed_step"] / row["vectorised_ms_per_seed_step"]
            rows.append(row)
            print(f"{backend:5} {method}: {args.seeds} seeds x {args.steps} steps | wall s sequential "
                  f"{row['sequential_wall_s']:.1f} vs vectorised {row['vectorised_wall_s']:.1f} "
                  f"(x{row['wall_ratio']:.2f}) | ms per seed-step {row['sequential_ms_per_seed_step']:.3f} vs "
                  f"{row['vectorised_ms_per_seed_step']:.3f} (x{row['step_ratio']:.2f}) | compile s "
                  f"{row['sequential_compile_s']:.1f} vs {row['vectorised_compile_s']:.1f}", flush=True)
    if args.out:
        import pandas as pd

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame([{k: v for k, v in r.items() if not k.endswith("errors")} for r in rows])
        frame.to_csv(out / "seed_throughput.csv", index=False)
        (out / "seed_throughput.md").write_text(frame.to_markdown(index=False, floatfmt=".3g") + "\n")
        (out / "seed_throughput.json").write_text(json.dumps(
            {"machine": platform.platform(), "python": platform.python_version(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
