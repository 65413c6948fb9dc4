"""Where torch's time to first result goes: tracing, export, inductor's stages, loading, and each route's step.

For each configuration, in fresh processes with an empty gradpath cache (so with empty
compilation caches), this script trains ``--steps`` steps three times, once per route (compiled,
traced, eager; ``gradpath.backends.torch.compile_choice``), then once more compiled on the caches the first
run filled, and reports:

- the compiled route's warm-up split into make_fx tracing, ``torch.export``, and inductor's own
  stages as ``torch._dynamo.utils.compile_times`` counts them (graph passes, lowering, Python code
  generation of the C++ kernels, compiling them);
- warm-up seconds from warm caches (the AOTInductor packages loaded; nothing traced);
- ms per step of each route, and the traced route's warm-up (make_fx and TorchScript).

Run: ``python -m gradpath.suite.perf.compile_breakdown --out results/perf/compile-breakdown``.
Writes ``breakdown.md`` and ``breakdown.json``. Compare numbers from one invocation only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = (("helmholtz", "M1", {}), ("helmholtz", "M4", {}), ("cavity", "M4", {"form": "psi-p"}))
# inductor's stages as compile_times names them (their times overlap where one calls another)
STAGES = {"graph passes": ("_recursive_pre_grad_passes", "_recursive_joint_graph_passes",
                           "_recursive_post_grad_passes"),
          "lowering": ("GraphLowering.run",),
          "kernel code generation": ("GraphLowering.codegen",),
          "C++ compile": ("compile_file",)}


def _child(problem: str, method: str, params: dict, compile_: str, steps: int, route: str | None) -> dict:
    """One run in this fresh process; its timings, and for a compiled cold run inductor's stages."""
    import torch._dynamo.utils as dynamo_utils

    import gradpath.backends.torch.packages as packages
    import gradpath.backends.torch.trainer as trainer_module
    from gradpath.backends.settings import TrainSettings
    from gradpath.backends.training import train
    from gradpath.problems import get_problem

    timed: dict[str, float] = {"make_fx": 0.0, "export": 0.0, "aoti_compile_and_package": 0.0}

    def timing(name, fn):
        def wrapped(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timed[name] += time.perf_counter() - t0
        return wrapped

    real_make_fx = packages.make_fx
    packages.make_fx = trainer_module.make_fx = lambda f, *a, **k: timing("make_fx", real_make_fx(f, *a, **k))
    packages.torch.export.export = timing("export", packages.torch.export.export)
    if route is not None:  # force the route (the plan would choose by length and caches)
        real_init = trainer_module.TorchTrainer.__init__

        def init(self, *a, **k):
            real_init(self, *a, **k)
            self.keep_route(route)
        trainer_module.TorchTrainer.__init__ = init
    import torch._inductor
    torch._inductor.aoti_compile_and_package = timing("aoti_compile_and_package",
                                                      torch._inductor.aoti_compile_and_package)
    settings = TrainSettings(method=method, steps=steps, log_every=100, compile=compile_)
    result = train(get_problem(problem, **params), settings, "torch")
    stages = {}
    for name, keys in STAGES.items():
        stages[name] = sum(sum(dynamo_utils.compilation_time_metrics.get(k, [])) for k in keys)
    return {"warmup_s": result.summary["compile_seconds"], "ms_per_step": result.summary["ms_per_step"],
            "route": result.compilation["route"], "cache": result.compilation["cache"], **timed, "stages": stages}


def measure(problem: str, method: str, params: dict, steps: int) -> dict:
    """The four runs of one configuration, each in a fresh process, on one fresh gradpath cache."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="gradpath-breakdown-") as cache:
        env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "GRADPATH_COMPILE_CACHE")}
        env["GRADPATH_CACHE"] = cache
        for name, compile_, route in (("compiled, empty caches", "on", None), ("compiled, warm caches", "on", None),
                                      ("traced", "off", "traced"), ("eager", "off", "eager")):
            payload = json.dumps([problem, method, params, compile_, steps, route])
            proc = subprocess.run([sys.executable, "-m", "gradpath.suite.perf.compile_breakdown", "--child", payload],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"{problem} {method} {name}: {proc.stderr.strip().splitlines()[-1:]}")
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{problem} {method} {name}: {out[name]['warmup_s']:.1f} s warm-up, "
                  f"{out[name]['ms_per_step']:.2f} ms/step", flush=True)
    return out


def markdown(rows: list[dict], steps: int) -> str:
    lines = [f"torch, {steps} steps a run, each run in a fresh process; warm-up = everything before the first step "
             "(trace, compile or load, one step, the first prediction).", "",
             "| configuration | route | warm-up s | make_fx s | export s | AOTInductor build s | ms/step |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        for name, r in row["runs"].items():
            lines.append(f"| {row['label']} | {name} | {r['warmup_s']:.2f} | {r['make_fx']:.1f} | {r['export']:.1f} | "
                         f"{r['aoti_compile_and_package']:.1f} | {r['ms_per_step']:.2f} |")
    lines += ["", "Inductor's stages in the cold compile (seconds, as `torch._dynamo.utils.compile_times` counts "
              "them, summed over the step, annealing and prediction graphs; AOTInductor compiles each graph's "
              "kernels and runner as one C++ file, in one compiler process):", "", "| configuration | " + " | ".join(STAGES) + " |",
              "| --- |" + " --- |" * len(STAGES)]
    for row in rows:
        stages = row["runs"]["compiled, empty caches"]["stages"]
        lines.append(f"| {row['label']} | " + " | ".join(f"{stages[s]:.1f}" for s in STAGES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--out", default="results/perf/compile-breakdown")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*json.loads(args.child))))
        return 0
    rows = []
    for problem, method, params in CONFIGS:
        label = f"{problem} {method}" + "".join(f" {v}" for v in params.values())
        rows.append({"label": label, "runs": measure(problem, method, params, args.steps)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, args.steps)
    (out / "breakdown.md").write_text(text)
    (out / "breakdown.json").write_text(json.dumps({"steps": args.steps, "rows": rows,
                                                    "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                    "load_before": os.getloadavg()}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
