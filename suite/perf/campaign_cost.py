"""What each configuration of a campaign costs per step, measured side by side in one process.

    gradpath bench --campaign balancing [--backend jax] [--rounds 5] [--out results/balancing]

A campaign's runs each record their own ms per step, but they train at different times, next to
different neighbours on a shared machine: a constant weight, which costs what M1 costs, showed up
as "2x M1" in the balancing report that way. Here every distinct configuration of the campaign
(its runs with the seed left out; the lowest seed stands for them) is built and compiled once in
this process and timed round-robin: each round trains ``chunks`` compiled chunks of each
configuration in turn, so a change of load hits every configuration alike, and the ratios between
them are what the campaign's cost columns should say. The writes are ``campaign-cost.csv`` (one
row per configuration: its runs-table configuration columns, then the median and quartiles of ms
per step over every timed chunk, compile seconds) and ``campaign-cost.md``.

The timing procedure is :mod:`gradpath.suite.perf.timing`'s, as for every timing in the project:
compiled chunks of ``chunk`` steps, each ended by a device synchronisation.
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
import pandas as pd

from gradpath.suite.perf.timing import prepare, quartiles, time_chunks
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.runs.store import config_row

COST_CSV, COST_MD = "campaign-cost.csv", "campaign-cost.md"
# settings the timing procedure sets itself, or that do not change what one step computes
_NOT_PASSED = ("method", "seed", "device", "log_every", "compile", "steps")
# the columns measure_side_by_side adds to a configuration's
_MEASURED = ("ms_per_step", "ms_q1", "ms_q3", "chunks", "compile_seconds", "lanes", "device", "seed")


def distinct_configurations(specs: Iterable[RunSpec], backends: Sequence[str] | None = None) -> list[RunSpec]:
    """One run per configuration (the run with the lowest seed), in campaign order; only ``backends``
    where given. Runs that differ in their seed alone compute the same step, so one of them is timed."""
    chosen: dict[str, RunSpec] = {}
    for spec in specs:
        if backends and spec.backend not in backends:
            continue
        settings = {k: v for k, v in spec.config["settings"].items() if k != "seed"}
        identity = repr((spec.problem, spec.backend, sorted(spec.parameters.items()), sorted(settings.items())))
        if identity not in chosen or spec.settings.get("seed", 0) < chosen[identity].settings.get("seed", 0):
            chosen[identity] = spec
    return list(chosen.values())


def measure_side_by_side(specs: Sequence[RunSpec], *, device: str = "auto", chunk: int = 100, rounds: int = 5,
                         chunks: int = 2, lanes: int | None = None,
                         progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Build and compile every run of ``specs``, then time them round-robin: ``rounds`` rounds of
    ``chunks`` compiled ``chunk``-step chunks each. ``lanes``: time that many seeds as one vectorised
    job, as a campaign trains them (None: one run, as ``gradpath run`` trains it).

    Returns one row per spec: :func:`gradpath.suite.runs.store.config_row` of its config, ``name``,
    ``ms_per_step`` (median over every chunk), ``ms_q1``, ``ms_q3``, ``chunks``, ``compile_seconds``,
    ``lanes``, ``device``.
    """
    from gradpath.problems import get_problem

    say = progress or (lambda text: None)
    prepared = []
    for i, spec in enumerate(specs):
        say(f"compiling {i + 1}/{len(specs)}: {spec.name}")
        settings = {k: v for k, v in spec.settings.items() if k not in _NOT_PASSED}
        prepared.append(prepare(get_problem(spec.problem, **spec.parameters), spec.settings["method"], spec.backend,
                                device, chunk=chunk, lanes=lanes, seed=spec.settings.get("seed", 0), **settings))
    samples: list[list[float]] = [[] for _ in specs]
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}")
        for i, p in enumerate(prepared):
            samples[i] += time_chunks(p, chunks, chunk)
    rows = []
    for spec, p, values in zip(specs, prepared, samples):
        q1, median, q3 = quartiles(values)
        rows.append({**config_row(spec.config), "name": spec.name, "ms_per_step": median, "ms_q1": q1, "ms_q3": q3,
                     "chunks": len(values), "compile_seconds": p.compile_seconds, "lanes": lanes or 1,
                     "device": p.device})
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, *, title: str, command: str, chunk: int, rounds: int, chunks: int) -> str:
    """``campaign-cost.md``: the table, with each configuration's ratio to the unannealed plain run (M1
    with the paper's weights) of the same problem and backend where the campaign has one."""
    m1 = frame[(frame["method"] == "M1") & _paper_weights(frame)].groupby(["problem", "backend"])["ms_per_step"].first()
    lines = [f"# {title}: ms per step of each configuration, side by side\n\n",
             f"Every configuration compiled once in one process, then timed round-robin: {rounds} rounds x {chunks} "
             f"chunks of {chunk} steps each, lanes {int(frame['lanes'].iloc[0])} (one run per job where 1); "
             f"{frame['device'].iloc[0]} on {platform.machine()} ({platform.node()}), "
             f"{datetime.date.today().isoformat()}. Ratios are what survive a shared machine; absolute times are "
             f"this run's only.\n\nCommand: `{command}`\n\n",
             "| problem | method | settings that vary | ms/step median [q1, q3] | vs M1 of the problem | compile s | "
             "run timed |\n", "|---|---|---|---|---|---|---|\n"]
    varying = {problem: _varying(part) for problem, part in frame.groupby("problem", sort=False)}
    for _, r in frame.iterrows():
        base = m1.get((r["problem"], r["backend"]))
        ratio = f"{r['ms_per_step'] / base:.2f}x" if base else "-"
        settings = ", ".join(f"{c}={r[c]}" for c in varying[r["problem"]] if not (r[c] is None or r[c] != r[c]))
        lines.append(f"| {r['problem']} | {r['method']} | {settings} | {r['ms_per_step']:.3f} [{r['ms_q1']:.3f}, "
                     f"{r['ms_q3']:.3f}] | {ratio} | {r['compile_seconds']:.1f} | {r['name']} |\n")
    return "".join(lines)


def _varying(frame: pd.DataFrame) -> list[str]:
    """The configuration columns that differ between the rows of one problem (what tells them apart)."""
    return [c for c in frame.columns if c not in _MEASURED and c not in ("problem", "method", "name", "layers")
            and frame[c].map(lambda v: "" if v is None or v != v else str(v)).nunique() > 1]


def _paper_weights(frame: pd.DataFrame) -> pd.Series:
    """Rows whose ``loss_weights`` are the paper's (absent)."""
    if "loss_weights" not in frame:
        return pd.Series(True, index=frame.index)
    return frame["loss_weights"].map(lambda v: v is None or v != v or v in ("", "{}"))


def write(frame: pd.DataFrame, out: str | Path, text: str) -> list[Path]:
    """Write ``campaign-cost.csv`` and ``campaign-cost.md`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / COST_CSV, index=False)
    (out / COST_MD).write_text(text)
    return [out / COST_CSV, out / COST_MD]


def run(specs: Sequence[RunSpec], backends: Sequence[str] | None, out: str | Path, *, title: str, command: str,
        device: str = "auto", chunk: int = 100, rounds: int = 5, chunks: int = 2, lanes: int | None = None,
        progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """:func:`distinct_configurations`, :func:`measure_side_by_side`, then :func:`write`."""
    chosen = distinct_configurations(specs, backends)
    frame = measure_side_by_side(chosen, device=device, chunk=chunk, rounds=rounds, chunks=chunks, lanes=lanes,
                                 progress=progress)
    text = markdown(frame, title=title, command=command, chunk=chunk, rounds=rounds, chunks=chunks)
    return frame, write(frame, out, text)

