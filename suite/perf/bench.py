"""``gradpath bench``: backend x method x problem side by side, one fresh process per configuration.

Each configuration trains through the shared loop (``gradpath.backends.training.train``: compile in the
trainer's warm-up, then device-synchronised chunks of ``--log-every`` steps, read out of the run's
history and summarised by gradpath.suite.perf.timing, as every timing in the project) in a process of its
own, so compile caches and peak memory do not leak from one row into the next. Rows run one at a
time, interleaved over repeats, so every row sees the same machine. The table gives the median and
the interquartile range (IQR) of ms per step over all full chunks, compile seconds apart, and peak
memory: on a GPU the framework's peak allocation, on the CPU the process's peak resident set
(``ru_maxrss``, which counts the framework's own import too; ``rss_delta`` in the CSV is the
growth after the import).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gradpath.problems.errors import UsageError
from gradpath.suite.runs.record import writable_directory
from gradpath.suite.perf.timing import ms_per_step_of_run, peak_device_mib, quartiles
from gradpath.suite.perf.report import DEEPXDE_FRAMEWORK, DEEPXDE_GOAL, TARGET_PROBLEM, markdown, ratios, targets, write_report


@dataclass(frozen=True)
class Config:
    """One row of the table (what a worker process measures)."""

    problem: str
    method: str
    backend: str
    device: str
    steps: int
    log_every: int


def measure(config: Config) -> dict[str, Any]:
    """Train ``config`` once in this process and return its timings and memory (the worker's job)."""
    from gradpath.backends import get_backend
    from gradpath.backends.settings import TrainSettings
    from gradpath.backends.training import train
    from gradpath.problems import get_problem

    impl = get_backend(config.backend)  # imports the framework: not part of the memory delta
    device = impl.resolve_device(config.device)
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # the compiled step, whatever --compile auto would choose for a run this long: the table compares steps
    settings = TrainSettings(method=config.method, steps=config.steps, log_every=config.log_every, device=device,
                             compile="on")
    result = train(get_problem(config.problem), settings, config.backend)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    chunk_ms = ms_per_step_of_run(result.history, config.log_every)
    summary = result.summary
    return {"chunk_ms": chunk_ms, "compile_seconds": summary["compile_seconds"], "error": summary["error"],
            "diverged": summary["diverged"], "device": device, "device_name": summary["device_name"],
            "versions": impl.versions(), "peak_rss_mib": rss_peak / 1024, "rss_delta_mib": (rss_peak - rss_import) / 1024,
            "peak_device_mib": peak_device_mib(config.backend, device)}


def run_in_subprocess(module: str, payload: dict[str, Any], env: dict[str, str] | None = None,
                      timeout: float = 1800) -> dict[str, Any]:
    """Run ``python -m module PAYLOAD_JSON OUT_JSON`` in a fresh interpreter and return what it wrote."""
    with tempfile.TemporaryDirectory(prefix="gradpath-bench-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, "-m", module, json.dumps(payload), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                              cwd=tempfile.gettempdir())
        if proc.returncode != 0 or not out.exists():
            tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-400:]
            raise RuntimeError(f"{module} {payload} failed (exit {proc.returncode}): {tail}")
        return json.loads(out.read_text())


def _row(config: Config, runs: list[dict[str, Any]]) -> dict[str, Any]:
    chunks = [ms for r in runs for ms in r["chunk_ms"]]
    q1, median, q3 = quartiles(chunks)
    device_mib = [r["peak_device_mib"] for r in runs if r["peak_device_mib"] is not None]
    return {"problem": config.problem, "method": config.method, "backend": config.backend, "device": runs[0]["device"],
            "ms_per_step": median, "iqr_ms": q3 - q1, "chunks": len(chunks),
            "compile_s": statistics.median(r["compile_seconds"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "rss_delta_mib": max(r["rss_delta_mib"] for r in runs),
            "peak_device_mib": max(device_mib) if device_mib else None, "error": runs[-1]["error"],
            "device_name": runs[0]["device_name"], "versions": runs[0]["versions"]}


def _choices(values: Sequence[str] | None, default: Sequence[str], valid: Sequence[str], kind: str) -> list[str]:
    """Repeatable, comma-separated option values, checked against ``valid``."""
    from gradpath.problems.errors import unknown_choice

    out = [v.strip() for value in (values or default) for v in value.split(",") if v.strip()]
    for v in out:
        if v not in valid:
            raise unknown_choice(kind, v, valid)
    return list(dict.fromkeys(out))


def deepxde_available() -> bool:
    """Whether DeepXDE is installed (the ``deepxde`` extra), without importing it."""
    import importlib.util

    return importlib.util.find_spec("deepxde") is not None


def compare_deepxde(rows: list[dict[str, Any]], steps: int, log_every: int, device: str) -> list[dict[str, Any]]:
    """DeepXDE's ms/step on the same Helmholtz setup, per framework, beside our M1 (see gradpath.suite.perf.deepxde)."""
    out = []
    for backend, framework in DEEPXDE_FRAMEWORK.items():
        ours = next((r for r in rows if r["problem"] == TARGET_PROBLEM and r["method"] == "M1"
                     and r["backend"] == backend), None)
        if ours is None:
            continue
        payload = {"steps": steps, "chunk": log_every, "device": ours["device"]}
        try:
            theirs = run_in_subprocess("gradpath.suite.perf.deepxde", payload, env={"DDE_BACKEND": framework})
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"deepxde {framework}: not measured ({exc})", file=sys.stderr)
            continue
        ratio = theirs["ms_per_step"] / ours["ms_per_step"]
        out.append({"framework": framework, "backend": backend, "deepxde_ms": theirs["ms_per_step"],
                    "deepxde_iqr_ms": theirs["iqr_ms"], "ours_ms": ours["ms_per_step"], "ratio": ratio,
                    "goal": DEEPXDE_GOAL, "met": ratio >= DEEPXDE_GOAL, "deepxde_version": theirs["version"],
                    "deepxde_first_call_s": theirs["first_call_seconds"]})
        print(f"deepxde {framework}: {theirs['ms_per_step']:.2f} ms/step, {ratio:.1f}x ours", flush=True)
    return out


def _machine() -> dict[str, Any]:
    from gradpath.backends.devices import cpu_name

    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def bench(problems: list[str], methods: list[str], backends: list[str], *, steps: int, log_every: int,
          repeats: int, device: str, deepxde: bool, argv: Sequence[str]) -> dict[str, Any]:
    """Measure every configuration (``repeats`` fresh processes each, interleaved) and build the report."""
    configs = [Config(p, m, b, device, steps, log_every) for p in problems for m in methods for b in backends]
    runs: dict[Config, list[dict[str, Any]]] = {c: [] for c in configs}
    machine = _machine()
    for repeat in range(repeats):
        for c in configs:
            runs[c].append(run_in_subprocess("gradpath.suite.perf.bench", asdict(c)))
            r = runs[c][-1]
            print(f"[{repeat + 1}/{repeats}] {c.problem} {c.method} {c.backend} {r['device']}: "
                  f"{statistics.median(r['chunk_ms']) if r['chunk_ms'] else float('nan'):.3f} ms/step, "
                  f"compile {r['compile_seconds']:.1f} s", flush=True)
    rows = [_row(c, runs[c]) for c in configs]
    versions = {k: v for r in rows for k, v in r["versions"].items()}
    report = {"command": " ".join(["gradpath", *argv]), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "host": socket.gethostname(), "machine": machine, "versions": versions,
              "steps": steps, "log_every": log_every, "repeats": repeats, "rows": rows,
              "ratios": ratios(rows), "targets": targets(rows), "deepxde": []}
    if deepxde:
        report["deepxde"] = compare_deepxde(rows, steps, log_every, device)
    return report


# -- the command ----------------------------------------------------------------------------------
# loads a campaign (a preset name or a .toml) into its name and runs, frozen-weights runs resolved against
# a store (None: none). The cli room passes it in: perf sits below campaigns and may not import them.
CampaignLoader = Callable[[str, "str | None"], "tuple[str, list[Any]]"]


def add_bench_command(commands: argparse._SubParsersAction, positive_int,
                      load_campaign: CampaignLoader | None = None) -> None:
    """Register ``gradpath bench`` (``--campaign`` where ``load_campaign`` is given)."""
    sub = commands.add_parser(
        "bench", help="time backends x methods x problems side by side (ms/step, compile s, peak memory)",
        description="Train each configuration in a fresh process, one at a time, and print one table: median and "
                    "IQR of ms per step over device-synchronised chunks, compile seconds, peak memory; then "
                    "M2/M1 and M4/M1 per backend against the targets, and DeepXDE's time on the same Helmholtz "
                    "setup where DeepXDE is installed. Writes bench.csv, bench.md and bench.json to --out.")
    sub.set_defaults(command=cmd_bench)
    sub.add_argument("--backend", action="append", metavar="NAME", help="jax, torch (repeatable or comma list; default: both)")
    sub.add_argument("--method", action="append", metavar="M", help="M1-M4 (repeatable or comma list; default: all)")
    sub.add_argument("--problem", action="append", metavar="NAME", help=f"a problem, see `gradpath list` (repeatable or comma list; default: {TARGET_PROBLEM})")
    sub.add_argument("--steps", type=positive_int, default=2000, metavar="N", help="steps per run (default: 2000)")
    sub.add_argument("--log-every", type=positive_int, default=100, metavar="N",
                     help="steps per timed chunk (default: 100, as gradpath run)")
    sub.add_argument("--repeats", type=positive_int, default=1, metavar="N",
                     help="fresh processes per configuration, interleaved (default: 1)")
    sub.add_argument("--device", default="auto", metavar="NAME", help="auto, cpu or cuda (default: auto)")
    sub.add_argument("--out", default="results/perf", metavar="DIR", help="where the report goes (default: results/perf)")
    sub.add_argument("--deepxde", action=argparse.BooleanOptionalAction, default=None,
                     help="time DeepXDE on the same Helmholtz setup (default: when DeepXDE is installed)")
    sub.add_argument("--time-to-first-result", action="store_true",
                     help="instead: time whole `gradpath run` processes, start to first history row and to end, "
                          "per backend and --compile choice, on empty and on warm compilation caches "
                          "(default method: M4); writes ttfr.md and ttfr.json to --out")
    if load_campaign is None:
        return
    sub.set_defaults(load_campaign=load_campaign)
    sub.add_argument("--campaign", metavar="PRESET_OR_TOML",
                     help="instead: build every configuration of this campaign (one seed each; --backend, --method "
                          "and --problem filter them) in this process and time them round-robin; writes "
                          "campaign-cost.csv and campaign-cost.md to --out (the balancing report reads its cost "
                          "columns from there)")
    sub.add_argument("--store", metavar="DIR", help="with --campaign: resolve frozen-weights runs against this store")
    sub.add_argument("--rounds", type=positive_int, default=5, metavar="N",
                     help="with --campaign: round-robin rounds of 2 chunks per configuration (default: 5)")
    sub.add_argument("--lanes", type=positive_int, metavar="N",
                     help="with --campaign: time N seeds as one vectorised job, as a campaign trains them "
                          "(default: one run, as `gradpath run` trains it)")


def cmd_bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from gradpath.backends import backend_status, get_backend
    from gradpath.backends.methods import METHODS
    from gradpath.backends.settings import DEVICES
    from gradpath.problems import problem_names

    backends = _choices(args.backend, ["jax", "torch"], list(backend_status()), "backend")
    methods = _choices(args.method, list(METHODS), list(METHODS), "method")
    problems = _choices(args.problem, [TARGET_PROBLEM], problem_names(), "problem")
    if args.device not in DEVICES:
        from gradpath.problems.errors import unknown_choice
        raise unknown_choice("device", args.device, DEVICES)
    for b in backends:  # not installed, or --device cuda without a GPU: a usage error before any run
        get_backend(b).resolve_device(args.device)
    if getattr(args, "campaign", None):
        return _cmd_campaign_cost(args, argv)
    for option in ("store", "lanes"):
        if getattr(args, option, None) is not None:
            raise UsageError(f"--{option} goes with --campaign")
    if args.time_to_first_result:
        return _cmd_ttfr(args, problems, _choices(args.method, ["M4"], list(METHODS), "method"), backends)
    deepxde = deepxde_available() if args.deepxde is None else args.deepxde
    if deepxde and not deepxde_available():
        raise UsageError("--deepxde: DeepXDE is not installed; install it with: pip install 'gradpath[deepxde]'")
    report = bench(problems, methods, backends, steps=args.steps, log_every=args.log_every, repeats=args.repeats,
                   device=args.device, deepxde=deepxde, argv=argv)
    files = write_report(report, Path(args.out))
    print(markdown(report))
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def _cmd_campaign_cost(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from gradpath.suite.perf import campaign_cost

    if args.time_to_first_result or args.deepxde or args.repeats != 1 or args.steps != 2000:
        raise UsageError("--campaign times the campaign's own configurations round-robin in one process; drop "
                         "--time-to-first-result, --deepxde, --repeats and --steps (--rounds sets the length)")
    name, specs = args.load_campaign(args.campaign, args.store)
    for option, column in (("backend", "backend"), ("method", "method"), ("problem", "problem")):
        values = getattr(args, option)
        if values:
            present = sorted({_spec_value(s, column) for s in specs})
            wanted = _choices(values, [], present, f"{option} of campaign {name}")
            specs = [s for s in specs if _spec_value(s, column) in wanted]
    frame, files = campaign_cost.run(
        specs, None, args.out, title=f"Campaign {name}", command="gradpath " + " ".join(argv), device=args.device,
        chunk=args.log_every, rounds=args.rounds, lanes=args.lanes,
        progress=lambda text: print(f"gradpath bench: {text}", file=sys.stderr, flush=True))
    print(f"timed {len(frame)} configurations; wrote {', '.join(str(f) for f in files)}")
    return 0


def _spec_value(spec: Any, column: str) -> str:
    return spec.settings["method"] if column == "method" else getattr(spec, column)


def _cmd_ttfr(args: argparse.Namespace, problems: list[str], methods: list[str], backends: list[str]) -> int:
    from gradpath.suite.perf.ttfr import markdown as ttfr_markdown
    from gradpath.suite.perf.ttfr import time_to_first_result

    if args.device != "auto" or args.repeats != 1 or args.deepxde:
        raise UsageError("--time-to-first-result times one fresh process per row on the default device; "
                         "drop --device, --repeats and --deepxde")
    reports = [time_to_first_result(p, m, backends, steps=args.steps, log_every=args.log_every)
               for p in problems for m in methods]
    out = writable_directory(args.out)
    text = "\n".join(ttfr_markdown(r) for r in reports)
    (out / "ttfr.md").write_text(text)
    (out / "ttfr.json").write_text(json.dumps({"machine": _machine(), "reports": reports}, indent=2) + "\n")
    print(text)
    print(f"wrote {out / 'ttfr.md'}, {out / 'ttfr.json'}")
    return 0


def _worker(argv: Sequence[str]) -> None:
    """``python -m gradpath.suite.perf.bench CONFIG_JSON OUT_JSON``: measure one configuration in this fresh process."""
    payload, out = argv
    Path(out).write_text(json.dumps(measure(Config(**json.loads(payload)))))


if __name__ == "__main__":
    _worker(sys.argv[1:])
