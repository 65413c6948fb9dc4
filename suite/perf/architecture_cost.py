"""What Table 2's architectures cost per step, relative to the 50 x 3 network, side by side in one run.

    python -m gradpath.suite.perf.architecture_cost [--backend jax --backend torch] [--lanes 5]
        [--method M1 --method M4] [--steps 600] [--out results/perf/architectures-cpu]

The paper campaign's 50 x 3 jobs have measured wall times; the other eight Table 2 networks have
none until they run. This measures the median ms per vectorised step (``--lanes`` seeds, as a
campaign job trains them) of every Table 2 architecture for each backend and method, one after
the other in this process, and its ratio to 50 x 3 measured in the same run, so that the rest of
the campaign can be estimated from the measured 50 x 3 jobs (ratios are what survive a shared,
noisy machine; the absolute times are only those of this run).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

WIDTHS, DEPTHS = (30, 50, 100), (3, 5, 7)


def measure(backend: str, method: str, width: int, depth: int, lanes: int, steps: int) -> dict:
    """Median ms per vectorised step of ``lanes`` seeds of one Helmholtz configuration."""
    from gradpath.backends.settings import TrainSettings
    from gradpath.backends.training import train_seeds
    from gradpath.problems import get_problem

    settings = [TrainSettings(method=method, seed=s, steps=steps, log_every=min(100, steps), width=width, depth=depth,
                              compile="on")
                for s in range(lanes)]
    summary = train_seeds(get_problem("helmholtz"), settings, backend)[0].summary
    return {"backend": backend, "method": method, "width": width, "depth": depth, "lanes": lanes,
            "ms_per_step": summary["ms_per_step"], "compile_s": summary["compile_seconds"],
            "device_name": summary["device_name"]}


def report(frame, lanes: int, steps: int) -> tuple[str, float]:
    """The markdown report of :func:`measure` rows, and the sum of the eight other architectures' mean ratios."""
    import pandas as pd

    base = frame[(frame["width"] == 50) & (frame["depth"] == 3)].set_index(["backend", "method"])["ms_per_step"]
    frame = frame.assign(vs_50x3=frame["ms_per_step"] / [base[(b, m)] for b, m in zip(frame["backend"],
                                                                                       frame["method"])])

    def table(values: str) -> pd.DataFrame:
        wide = frame.pivot_table(index=["width", "depth"], columns=["backend", "method"], values=values)
        wide.columns = [f"{b} {m}" for b, m in wide.columns]
        wide.index = [f"{w} x {d}" for w, d in wide.index]
        return wide

    ratios = table("vs_50x3")
    ratios["mean"] = ratios.mean(axis=1)
    total = float(ratios["mean"].drop("50 x 3").sum())
    text = (f"# Table 2 architectures: ms per vectorised step relative to 50 x 3\n\n"
            f"{lanes} seeds per job, {steps} steps, median over chunks of 100; {frame['device_name'].iloc[0]}, "
            f"{platform.node()}.\n\n{ratios.to_markdown(floatfmt='.2f')}\n\n"
            f"Sum of the mean ratios of the eight other architectures: {total:.1f} (the rest of Table 2 costs "
            f"about that many times its 50 x 3 row).\n\nAbsolute ms per step (this run only, on a shared "
            f"machine):\n\n{table('ms_per_step').to_markdown(floatfmt='.2f')}\n")
    return text, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=("jax", "torch"))
    parser.add_argument("--method", action="append", choices=("M1", "M2", "M3", "M4"))
    parser.add_argument("--lanes", type=int, default=5, help="seeds per job, as the campaign's --lanes (default 5)")
    parser.add_argument("--steps", type=int, default=600, help="steps per measurement (default 600)")
    parser.add_argument("--out", default="results/perf/architectures-cpu")
    args = parser.parse_args(argv)
    import pandas as pd

    rows = []
    for backend in args.backend or ["jax", "torch"]:
        for method in args.method or ["M1", "M4"]:
            for width in WIDTHS:
                for depth in DEPTHS:
                    rows.append(measure(backend, method, width, depth, args.lanes, args.steps))
                    print(json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows)
    text, total = report(frame, args.lanes, args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "architectures.csv", index=False)
    (out / "architectures.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
