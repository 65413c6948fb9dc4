"""How close a JAX training step comes to the machine's arithmetic rate: XLA's flop count per step,
the measured step time, and their quotient, for one seed and for seeds vectorised.

    PYTHONPATH=. python benchmarks/jax_step_flops.py [--case helmholtz --case cavity:psi-p ...]
        [--method M1] [--lanes 5] [--steps 100] [--repeats 7] [--out results/perf/jax-step-flops.md]

A case is a problem, or ``cavity:FORM`` for one form of the cavity. For each case the step is
compiled twice (one seed; ``--lanes`` seeds vectorised), and each compiled chunk of ``--steps``
steps is timed ``--repeats`` times; the median is reported. The flop count is XLA's cost analysis
of the compiled step (gradpath.backends.jax.trainer.JaxTrainer.step_flops). It counts every floating-point
operation, elementwise ones included, so GFLOP/s here is a rate of the whole step, not a GEMM rate.

Why it exists: vectorising seeds gains little in JAX on the cavity's psi-p form, where PyTorch gains
1.6x (results/paper/cavity-cost.md). If one seed's step already runs near the rate the core reaches,
the seed axis has little idle capacity to fill. An asv module must import cheaply: everything runs
under ``main()``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def _case(name: str):
    """The problem a case names: a problem name, or ``cavity:FORM``."""
    from gradpath.problems import get_problem

    problem, _, form = name.partition(":")
    return get_problem(problem, form=form) if form else get_problem(problem)


def _compiled(case: str, method: str, lanes: int | None, steps: int):
    """A warmed-up trainer for ``case``, its initial state and a chunk of ``steps`` batches."""
    from gradpath.backends.data import draw_batches, initial_arrays, seed_start
    from gradpath.backends.jax.trainer import JaxTrainer
    from gradpath.backends.settings import TrainSettings

    problem = _case(case)
    settings = TrainSettings(method=method, steps=steps, log_every=steps, device="cpu")
    trainer = JaxTrainer(problem, settings, "cpu", lanes)
    starts = [seed_start(problem, dataclasses.replace(settings, seed=s)) for s in range(lanes or 1)]
    state = trainer.init(*initial_arrays(starts, lanes))
    batches = draw_batches(problem, np.random.default_rng(0), steps, settings.batch_size, settings.dtype)
    if lanes is not None:
        batches = [np.stack([b] * lanes) for b in batches]
    trainer.warmup(state, batches)
    return trainer, state, batches


def measure(case: str, method: str, lanes: int, steps: int, repeats: int) -> list[dict]:
    """One seed and ``lanes`` seeds of ``case``: XLA's flops per step, median ms per step and their
    quotient (GFLOP/s). The two compiled steps are timed in turn, repeat by repeat, so that a change
    in the machine's load falls on both."""
    compiled = {n: _compiled(case, method, None if n == 1 else n, steps) for n in (1, lanes)}
    seconds: dict[int, list[float]] = {n: [] for n in compiled}
    for _ in range(repeats):
        for n, (trainer, state, batches) in compiled.items():
            t0 = time.perf_counter()
            trainer.train(state, batches, 0)  # the same start each time: every repeat does the same work
            trainer.sync()
            seconds[n].append(time.perf_counter() - t0)
    rows = []
    for n, (trainer, _, _) in compiled.items():
        ms = 1e3 * float(np.median(seconds[n])) / steps
        flops = trainer.step_flops()
        rows.append({"case": case, "method": method, "seeds": n, "mflop_per_step": flops / 1e6, "ms_per_step": ms,
                     "ms_per_seed_step": ms / n, "gflop_per_s": flops / 1e6 / ms})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", help="a problem, or cavity:FORM (default: helmholtz, "
                        "cavity:psi-p, cavity:u-v-p)")
    parser.add_argument("--method", default="M1", choices=("M1", "M2", "M3", "M4"))
    parser.add_argument("--lanes", type=int, default=5, help="seeds vectorised in the second measurement")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    if args.lanes < 2:
        parser.error(f"--lanes {args.lanes}: the vectorised measurement needs at least 2 seeds")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")  # one core, as campaign jobs run
    rows = [row for case in args.case or ["helmholtz", "cavity:psi-p", "cavity:u-v-p"]
            for row in measure(case, args.method, args.lanes, args.steps, args.repeats)]
    import jax

    from gradpath.backends.devices import cpu_name

    lines = [f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()}, jax {jax.__version__}, "
             f"XLA_FLAGS={os.environ['XLA_FLAGS']}; chunks of {args.steps} steps, median of {args.repeats}.", "",
             "| case | method | seeds | MFLOP/step (XLA) | ms/step | ms per seed-step | GFLOP/s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['method']} | {r['seeds']} | {r['mflop_per_step']:.1f} | {r['ms_per_step']:.2f} | "
              f"{r['ms_per_seed_step']:.2f} | {r['gflop_per_s']:.1f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
