"""``gradpath diagnose``: the diagnostics presets of :mod:`gradpath.suite.diagnostics.experiments` and the histograms a run recorded."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from gradpath.problems.errors import UsageError, unknown_choice
from gradpath.suite.diagnostics.experiments import EXPERIMENTS, get_experiment, run_experiment
from gradpath.suite.runs.record import load_gradients, writable_directory


def add_diagnose_command(commands: argparse._SubParsersAction) -> None:
    """Register ``gradpath diagnose PRESET [--backend] [--out] [--steps] [--seeds N...|--seed N] [--parameter-set]``."""
    sub = commands.add_parser(
        "diagnose", help="gradient-pathology diagnostics: the paper's Figs. 3, 4, 5 and 11",
        description="Train the runs of a diagnostics preset and write gradient histograms, Hessian eigenvalues, "
                    "figures and a README with the paper's claims beside ours. Presets: "
                    + "; ".join(f"{k}: {e.description}" for k, e in EXPERIMENTS.items()))
    sub.set_defaults(command=cmd_diagnose)
    sub.add_argument("preset", metavar="PRESET", help="one of: " + ", ".join(EXPERIMENTS) + "; or `histograms RUN_DIR...`: "
                     "the per-layer gradient histograms a `gradpath run` recorded (gradients.npz), one row per run "
                     "(e.g. the paper's Figs. 2, 7, 12, 13), written to --out (default: gradient-histograms.png)")
    sub.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run directories (histograms only)")
    sub.add_argument("--step", type=int, metavar="N", help="histograms: the checkpoint to draw (default: the last)")
    sub.add_argument("--backend", default="jax", metavar="NAME", help="jax or torch (default: jax)")
    sub.add_argument("--out", metavar="DIR", help="output directory (default: results/diagnostics/PRESET)")
    sub.add_argument("--steps", type=int, metavar="N", help="Adam steps per run (default: the paper's 40000)")
    seeds = sub.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="N",
                       help="seeds of weights and batches, one run directory each (default: the preset's: "
                            + "; ".join(f"{k} {' '.join(map(str, e.seeds))}" for k, e in EXPERIMENTS.items())
                            + "); a seed whose runs are complete in --out is read back, not trained again")
    seeds.add_argument("--seed", type=int, metavar="N", help="one seed: the same as --seeds N")
    sub.add_argument("--parameter-set", default="weights", metavar="NAME",
                     help="parameters of the statistics and Hessians: weights (the authors', default) or all")
    sub.add_argument("--quiet", action="store_true", help="no progress lines")
    sub.add_argument("--report-only", action="store_true",
                     help="train nothing: rebuild the figures, numbers.json and README.md from the runs in --out")


def cmd_diagnose(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``gradpath diagnose``: run the preset, print where its results went."""
    if args.preset == "histograms":
        return _plot_histograms(args.runs, Path(args.out or "gradient-histograms.png"), args.step)
    if args.runs:
        raise UsageError(f"run directories are only taken by `gradpath diagnose histograms`, not by {args.preset!r}")
    get_experiment(args.preset)
    if args.backend not in ("jax", "torch"):
        raise unknown_choice("backend with Hessian products", args.backend, ("jax", "torch"))
    seeds = args.seeds if args.seeds is not None else None if args.seed is None else [args.seed]
    if seeds is not None and (min(seeds) < 0 or len(set(seeds)) != len(seeds)):
        raise UsageError(f"--seed/--seeds take distinct non-negative integers, got {' '.join(map(str, seeds))}")
    if args.out is not None:
        writable_directory(args.out)
    out = run_experiment(args.preset, backend=args.backend, out=args.out, steps=args.steps, seeds=seeds,
                         parameter_set=args.parameter_set, quiet=args.quiet, report_only=args.report_only,
                         argv=argv)
    numbers = json.loads((out / "numbers.json").read_text())
    over = f" (median over seeds {' '.join(map(str, numbers['seeds']))})" if len(numbers["seeds"]) > 1 else ""
    print(f"{args.preset}{over}: " + "; ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in numbers.get("headline", {}).items()) + f"; written to {out}")
    if numbers.get("missing_seeds"):
        print(f"{args.preset}: seeds {' '.join(map(str, numbers['missing_seeds']))} have no complete runs in {out} "
              "and are left out", flush=True)
    return 0


def _plot_histograms(runs: Sequence[str], out: Path, step: int | None) -> int:
    """``gradpath diagnose histograms RUN_DIR...``: one figure of the runs' recorded gradient histograms."""
    from gradpath.suite.diagnostics.plots import histogram_figure

    if not runs:
        raise UsageError("histograms needs at least one run directory with a gradients.npz (gradpath run records one)")
    records = []
    for run in runs:
        path = Path(run)
        if not (path / "gradients.npz").is_file():
            raise UsageError(f"{run} holds no gradients.npz; record one with `gradpath run ... --gradient-every N`")
        record = load_gradients(path)
        if step is not None and step not in record.steps:
            raise UsageError(f"{run} has no gradient checkpoint at step {step}; "
                             f"choose one of: {', '.join(map(str, record.steps))}")
        records.append((path.name, record))
    print(f"wrote {histogram_figure(records, out, step=step)}")
    return 0
