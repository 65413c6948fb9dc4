"""How close a JAX training step comes to the machine's arithmetic rate: XLA's flop count per step,
the measured step time, and their quotient, for one seed and for seeds vectorised.

    python -m gradpath.suite.perf.jax_step_flops [--case helmholtz --case cavity:psi-p ...]
        [--method M1] [--lanes 5] [--steps 100] [--repeats 7] [--out results/perf/jax-step-flops.md]

A case is a problem, or ``cavity:FORM`` for one form of the cavity. For each case the step is
compiled twice (one seed; ``--lanes`` seeds vectorised), and each compiled chunk of ``--steps``
steps is timed ``--repeats`` times; the median is reported. The flop count is XLA's cost analysis
of the compiled step (gradpath.backends.jax.trainer.JaxTrainer.step_flops). It counts every floating-point
operation, elementwise ones included, so GFLOP/s here is a rate of the whole step, not a GEMM rate.

Why it exists: vectorising seeds gains little in JAX on the cavity's psi-p form, where PyTorch gains
1.6x (results/paper/cavity-cost.md). If one seed's step already runs near the rate the core reaches,
the seed axis has little idle capacity to fill. The timing is gradpath.suite.perf.timing's.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone
from pathlib import Path


def _case(name: str):
    """The problem a case names: a problem name, or ``cavity:FORM``."""
    from gradpath.problems import get_problem

    problem, _, form = name.partition(":")
    return get_problem(problem, form=form) if form else get_problem(problem)


def measure(case: str, method: str, lanes: int, steps: int, repeats: int) -> list[dict]:
    """One seed and ``lanes`` seeds of ``case``: XLA's flops per step, median ms per step and their
    quotient (GFLOP/s). The two compiled steps are timed in turn, repeat by repeat, so that a change
    in the machine's load falls on both."""
    from gradpath.suite.perf.timing import prepare, quartiles, time_chunks

    compiled = {n: prepare(_case(case), method, "jax", "cpu", chunk=steps, lanes=None if n == 1 else n, pool=steps)
                for n in (1, lanes)}
    ms: dict[int, list[float]] = {n: [] for n in compiled}
    for _ in range(repeats):
        for n, prepared in compiled.items():
            # the same start each time (advance=False): every repeat does the same work
            ms[n] += time_chunks(prepared, 1, steps, advance=False)
    rows = []
    for n, prepared in compiled.items():
        step_ms = quartiles(ms[n])[1]
        flops = prepared.trainer.step_flops()
        rows.append({"case": case, "method": method, "seeds": n, "mflop_per_step": flops / 1e6, "ms_per_step": step_ms,
                     "ms_per_seed_step": step_ms / n, "gflop_per_s": flops / 1e6 / step_ms})
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
