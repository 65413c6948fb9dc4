"""Does the input normalisation, or the seed itself, decide when a run's error first falls below 0.5?

    gradpath analyse escape-factors STORE [--problem helmholtz] [--backend jax] [--method M1]

Helmholtz's M1 runs leave their slow phase (boundary-violating: error 3-8, boundary loss near 35;
not u = 0, see :mod:`gradpath.suite.analysis.escape`) at very different steps, and late ones end with large errors
(results/paper/findings.md). Two things that differ between seeds could set that step: the
input normalisation, whose statistics the authors' code estimates from a random sample (spec 11),
and the seed's initial weights. For the store's complete runs of one problem, backend and method,
with the paper's settings apart from width and depth, this prints:

- the spread of the normalisation statistics (``norm_mu``, ``norm_sigma`` in each run's params.npz);
- Spearman's rank correlation of each statistic with the escape step (:mod:`gradpath.suite.analysis.escape`; a run that
  never leaves ranks last) and with the final error, over all those runs;
- for every pair of architectures that share seeds, Spearman's correlation of the seeds' escape
  steps: if a seed's weights decided it, a seed that leaves late on one architecture would tend to
  on another too. Widths and depths change every weight matrix, so this tests the seed number, not
  the weights.
"""

from __future__ import annotations

import argparse
import json
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from gradpath.backends.data import seed_normalisation
from gradpath.backends.settings import TrainSettings
from gradpath.problems import get_problem, problem_class
from gradpath.suite.analysis.escape import escape_steps
from gradpath.suite.runs.record import CONFIG, PARAMS
from gradpath.suite.runs.store import Store, gather

# settings that must be the paper's (TrainSettings defaults) for a run to count; width and depth vary
FIXED = ("gate", "anneal_every", "steps", "batch_size", "lr", "lr_decay_rate", "lr_decay_steps", "adam_eps",
         "adam_form", "dtype")


def runs_with_escape(store: Store, problem: str, backend: str, method: str) -> pd.DataFrame:
    """The selected runs with their width, depth, seed, final error, escape step and normalisation statistics."""
    runs, history = gather(store)
    if runs.empty:
        raise SystemExit(f"no run records in {store.root}")
    defaults = TrainSettings()
    keep = (runs["status"] == "complete") & (runs["problem"] == problem) & (runs["backend"] == backend) \
        & (runs["method"] == method) & runs["anneal_alpha"].isna() \
        & (runs["weighting"] == problem_class(problem).default_weighting)
    for name in FIXED:
        keep &= runs[name] == getattr(defaults, name)
    runs = runs[keep].copy()
    if runs.empty:
        raise SystemExit(f"no complete {problem} {method} {backend} run with the paper's settings in {store.root}")
    runs["escape"] = escape_steps(runs, history).fillna(-1.0)  # nan (already below at the first row): first
    norms = []
    for name, seed in zip(runs["name"], runs["seed"]):
        mu, sigma = _normalisation(store.root / name, int(seed))
        norms.append({**{f"mu_{a}": float(v) for a, v in enumerate(mu)},
                      **{f"sigma_{a}": float(v) for a, v in enumerate(sigma)}})
    return pd.concat([runs, pd.DataFrame(norms, index=runs.index)], axis=1)


def _normalisation(run: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The run's input mean and std: from params.npz, or drawn again from its seed where the record
    has none (records rebuilt by ``gradpath restore``, or written before they were saved)."""
    try:
        with np.load(run / PARAMS) as params:
            return params["norm_mu"], params["norm_sigma"]
    except (OSError, KeyError):
        config = json.loads((run / CONFIG).read_text())
        return seed_normalisation(get_problem(config["problem"], **config.get("parameters", {})), seed)


def report(runs: pd.DataFrame) -> str:
    """The three findings of the module docstring, as text."""
    lines = [f"{len(runs)} runs, {runs.groupby(['width', 'depth']).ngroups} architectures"]
    for col in sorted(c for c in runs if c.startswith(("mu_", "sigma_"))):
        values = runs[col]
        if values.nunique() == 1:
            lines.append(f"{col}: {values.iloc[0]:.5f} in every run")
            continue
        escape = stats.spearmanr(values, runs["escape"])
        error = stats.spearmanr(values, runs["error"])
        lines.append(f"{col}: {values.min():.5f} to {values.max():.5f} (std {values.std():.1e}); Spearman with "
                     f"the escape step {escape.statistic:+.2f} (p = {escape.pvalue:.2g}), with the final error "
                     f"{error.statistic:+.2f} (p = {error.pvalue:.2g})")
    by_arch = runs.pivot_table(index="seed", columns=["width", "depth"], values="escape")
    pairs = []
    for a, b in itertools.combinations(by_arch.columns, 2):
        both = by_arch[[a, b]].dropna()
        if len(both) >= 5:
            pairs.append(stats.spearmanr(both[a], both[b]).statistic)
    if pairs:
        lines.append(f"escape step of a seed on one architecture against another: Spearman over {len(pairs)} pairs "
                     f"of architectures, mean {np.mean(pairs):+.2f}, range {min(pairs):+.2f} to {max(pairs):+.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    """Print the report of the module docstring for ``args`` (``gradpath analyse``'s options, gradpath.suite.cli.analyse)."""
    print(report(runs_with_escape(Store(args.store, create=False), args.problem, args.backend, args.method)))
