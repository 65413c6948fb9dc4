"""``gradpath bench --time-to-first-result``: how long a user waits, from typing ``gradpath run`` on.

Each row is one real ``gradpath run`` in a fresh process, timed from before the process starts:
to its first history row (interpreter start, imports, reference, compile and the first chunk of
steps) and to its end. Compilation caches are gradpath's own (:mod:`gradpath.backends.compile_cache`)
in a temporary ``GRADPATH_CACHE``: ``empty`` rows start from nothing, ``warm`` rows repeat the
configuration on the caches that a compiled run of it filled. Rows run one after another, so
every row sees the same machine; ratios against JAX come from the same invocation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# (backend, --compile, caches): the rows, in the order they run. A warm row follows the row that
# filled its cache; torch auto runs on empty caches (where it should run eagerly for short runs)
# and on the caches that the compiled torch rows filled.
ROWS = (("jax", "on", "empty"), ("jax", "on", "warm"),
        ("torch", "on", "empty"), ("torch", "on", "warm"), ("torch", "off", "empty"),
        ("torch", "auto", "empty"), ("torch", "auto", "warm"))
PLAN_STEPS = (200, 2000, 40000)  # the run lengths whose --compile auto choice the report states


def _first_row_seconds(history: Path) -> bool:
    """Whether ``history`` (a run's history.csv) holds a row beyond its header."""
    try:
        with open(history, "rb") as f:
            return f.read().count(b"\n") >= 2
    except OSError:
        return False


def time_run(problem: str, method: str, backend: str, compile_: str, steps: int, log_every: int,
             cache: Path) -> dict[str, Any]:
    """One ``gradpath run`` in a fresh process with ``GRADPATH_CACHE=cache``; its timings and summary."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TORCHINDUCTOR_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR", "GRADPATH_COMPILE_CACHE")}
    env["GRADPATH_CACHE"] = str(cache)
    with tempfile.TemporaryDirectory(prefix="gradpath-ttfr-") as out:
        cmd = [sys.executable, "-m", "gradpath.suite", "run", problem, "--method", method, "--backend", backend,
               "--iterations", str(steps), "--log-every", str(log_every), "--compile", compile_, "--out", out,
               "--quiet", "--checkpoint-every", "0"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=tempfile.gettempdir())
        first = None
        while proc.poll() is None:  # the first row is on disk when the user could first see it
            if first is None and any(_first_row_seconds(h) for h in Path(out).glob("*/history.csv")):
                first = time.perf_counter() - t0
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            tail = " ".join(stderr.strip().splitlines()[-3:])[-400:]
            raise RuntimeError(f"{' '.join(cmd[2:])} failed (exit {proc.returncode}): {tail}")
        run = next(Path(out).glob("*/summary.json")).parent
        summary = json.loads((run / "summary.json").read_text())
        compilation = json.loads((run / "manifest.json").read_text()).get("compilation") or {}
    return {"backend": backend, "compile": compile_, "route": compilation.get("route"),
            "reason": compilation.get("reason"), "first_row_s": first if first is not None else wall,
            "wall_s": wall, "compile_s": summary["compile_seconds"], "ms_per_step": summary["ms_per_step"],
            "error": summary["error"]}


def time_to_first_result(problem: str, method: str, backends: list[str], *, steps: int, log_every: int
                         ) -> dict[str, Any]:
    """Every row of :data:`ROWS` for the installed ``backends``, plus torch's auto choice at :data:`PLAN_STEPS`."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="gradpath-ttfr-cache-") as tmp:
        caches: dict[tuple[str, str], Path] = {}
        for backend, compile_, state in ROWS:
            if backend not in backends:
                continue
            # a compiled route's warm row reuses the cache its empty row filled; torch auto's warm row
            # the one the compiled torch rows filled
            owner = (backend, "on") if compile_ == "auto" and state == "warm" else (backend, compile_)
            if state == "empty":
                cache = Path(tmp) / f"{backend}-{compile_}"
                cache.mkdir()
                caches.setdefault(owner, cache)
            else:
                cache = caches[owner]
            row = {**time_run(problem, method, backend, compile_, steps, log_every, cache), "caches": state}
            print(f"{backend} --compile {compile_}, {state} caches: first row {row['first_row_s']:.1f} s, "
                  f"wall {row['wall_s']:.1f} s, compile {row['compile_s']:.1f} s, {row['ms_per_step']:.2f} ms/step "
                  f"({row['route']})", flush=True)
            rows.append(row)
        plans = _auto_plans(problem, method, caches.get(("torch", "on"))) if "torch" in backends else []
    jax_rows = {r["caches"]: r for r in rows if r["backend"] == "jax"}
    for r in rows:
        base = jax_rows.get(r["caches"]) or jax_rows.get("empty")
        r["wall_vs_jax"] = r["wall_s"] / base["wall_s"] if base else None
    return {"problem": problem, "method": method, "steps": steps, "log_every": log_every, "rows": rows,
            "auto_plans": plans}


def _auto_plans(problem: str, method: str, warm_cache: Path | None) -> list[dict[str, Any]]:
    """What ``--compile auto`` chooses for each of :data:`PLAN_STEPS` steps, on empty and on warm caches."""
    code = ("import json, sys\n"
            "from backends import get_backend\n"
            "from gradpath.backends.settings import TrainSettings\n"
            "from gradpath.backends.torch.compile_choice import plan\n"
            "from problems import get_problem\n"
            "get_backend('torch')\n"  # places the inductor cache, as a run does
            "p = get_problem(sys.argv[1])\n"
            "print(json.dumps([plan(p, TrainSettings(method=sys.argv[2], steps=n), 'cpu', None).as_dict() | {'steps': n}"
            f" for n in {list(PLAN_STEPS)}]))\n")
    out = []
    with tempfile.TemporaryDirectory(prefix="gradpath-ttfr-empty-") as empty:
        for state, cache in (("empty", Path(empty)), ("warm", warm_cache)):
            if cache is None:
                continue
            env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR",)}
            env["GRADPATH_CACHE"] = str(cache)
            proc = subprocess.run([sys.executable, "-c", code, problem, method], capture_output=True, text=True,
                                  env=env, check=True, cwd=tempfile.gettempdir())
            out += [{**p, "caches": state} for p in json.loads(proc.stdout)]
    return out


def markdown(report: dict[str, Any]) -> str:
    """The time-to-first-result table and the auto choices, as Markdown."""
    lines = [f"Time to first result: `gradpath run {report['problem']} --method {report['method']} "
             f"--iterations {report['steps']}` in a fresh process, per backend and `--compile` choice.", "",
             "| backend | --compile | caches | route taken | first row s | wall s | wall / JAX | compile s | ms/step |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        ratio = "" if r["wall_vs_jax"] is None else f"{r['wall_vs_jax']:.2f}"
        lines.append(f"| {r['backend']} | {r['compile']} | {r['caches']} | {r['route']} | {r['first_row_s']:.1f} | "
                     f"{r['wall_s']:.1f} | {ratio} | {r['compile_s']:.1f} | {r['ms_per_step']:.2f} |")
    if report["auto_plans"]:
        lines += ["", "What `--compile auto` chooses (torch):", "", "| steps | caches | route | reason |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {p['steps']:,} | {p['caches']} | {p['route']} | {p['reason']} |" for p in report["auto_plans"]]
    return "\n".join(lines) + "\n"
