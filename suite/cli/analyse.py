"""``gradpath analyse NAME ...``: analyses of finished stores or published results (they train nothing).

Each analysis lives in ``gradpath.suite.analysis.<module>`` and is imported only when its command
runs, so ``gradpath --help`` does not pay for pandas and scipy.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path

# command name -> (module under gradpath.suite.analysis, one-line help)
ANALYSES = {
    "compare-stores": ("compare_stores", "the same runs in two stores side by side: errors run by run and cell by "
                                         "cell, a paired test per cell, and runs that ended differently"),
    "backend-pairs": ("backend_pairs", "each seed trained in both backends: how far apart the pair ends, and the "
                                       "step at which their histories part"),
    "escape-factors": ("escape_factors", "whether the input normalisation or the seed decides when a run's error "
                                         "first falls below 0.5"),
}


def add_analyse_command(commands: argparse._SubParsersAction) -> None:
    """Register ``gradpath analyse`` and its analyses (see :data:`ANALYSES`)."""
    analyse = commands.add_parser(
        "analyse", help="analyses of finished stores or results: " + ", ".join(ANALYSES),
        description="Analyses that read finished stores or published results, train nothing, and print "
                    "(or write) markdown.")
    names = analyse.add_subparsers(dest="analysis", metavar="{" + ",".join(ANALYSES) + "}", required=True)

    def sub(name: str) -> argparse.ArgumentParser:
        module, text = ANALYSES[name]
        parser = names.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        parser.set_defaults(command=cmd_analyse, analysis_module=module)
        return parser

    stores = sub("compare-stores")
    stores.add_argument("store_a", metavar="STORE_A", help="a store of run records")
    stores.add_argument("store_b", metavar="STORE_B", help="another store, holding runs with the same keys")
    stores.add_argument("--label-a", default="a", metavar="NAME", help="STORE_A's name in the report (default: a)")
    stores.add_argument("--label-b", default="b", metavar="NAME", help="STORE_B's name in the report (default: b)")
    stores.add_argument("--out", type=Path, metavar="FILE", help="write the markdown here as well as printing it")

    pairs = sub("backend-pairs")
    pairs.add_argument("results", nargs="?", default="results/paper", metavar="RESULTS",
                       help="a directory that gradpath report wrote: runs.parquet, history.parquet "
                            "(default: results/paper)")
    pairs.add_argument("--seeds", type=int, nargs="*", metavar="SEED", help="only these seeds (default: every seed in both)")
    pairs.add_argument("--problem", metavar="NAME", help="only this problem")
    pairs.add_argument("--exclude", nargs="*", default=[], metavar="LABEL",
                       help="configuration labels to leave out, e.g. 'helmholtz 50x3'")
    pairs.add_argument("--part", type=float, default=0.01, metavar="X",
                       help="relative difference at which histories part (default: 0.01)")
    pairs.add_argument("--metric", default="rel_l2", metavar="COLUMN", help="history column to compare (default: rel_l2)")

    escape = sub("escape-factors")
    escape.add_argument("store", type=Path, metavar="STORE", help="a store of run records (a campaign's --store)")
    escape.add_argument("--problem", default="helmholtz", metavar="NAME", help="default: helmholtz")
    escape.add_argument("--backend", default="jax", metavar="NAME", help="default: jax")
    escape.add_argument("--method", default="M1", choices=("M1", "M2", "M3", "M4"), help="default: M1")


def cmd_analyse(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the analysis ``args`` names (its module's ``run``)."""
    importlib.import_module(f"gradpath.suite.analysis.{args.analysis_module}").run(args)
    return 0
