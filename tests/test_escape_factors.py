"""gradpath.suite.analysis.escape_factors (`gradpath analyse escape-factors`): what the escape step is (not) correlated with, on records built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gradpath.suite.analysis.escape_factors import report, runs_with_escape
from gradpath.suite.campaigns.definition import expand, parse_campaign
from gradpath.suite.runs.record import RunRecord
from gradpath.suite.runs.store import Store

ESCAPE = {0: 400, 1: 200, 2: 600, 3: 300, 4: 500}  # the step at which each seed's error falls below 0.5


def _record(store: Store, spec, escape: int, sigma: float) -> None:
    record = RunRecord.create(store.root, spec.config, {"command": ["test"]}, force=True)
    steps = range(100, 800, 100)  # the first row is above 0.5 for every seed
    for step in steps:
        record.history.append({"step": step, "seconds": 0.0, "loss_residual": 1.0,
                               "rel_l2": 0.9 if step < escape else 0.1})
    record.finish("complete", {"steps": steps[-1], "error": 0.1 + escape / 1e4, "metric": "rel_l2"},
                  {"W0": np.ones((2, 2)), "norm_mu": np.zeros(2), "norm_sigma": np.array([sigma, 0.577])})


def test_correlations_of_the_escape_step(tmp_path):
    store = Store(tmp_path)
    grid = {"problem": ["helmholtz"], "method": ["M1", "M2"], "width": [30, 50], "seed": sorted(ESCAPE)}
    for spec in expand(parse_campaign({"grid": grid}, "test")):
        seed = spec.config["settings"]["seed"]
        _record(store, spec, ESCAPE[seed], 0.570 + ESCAPE[seed] / 1e5)  # sigma_0 rises with the escape step
    other = expand(parse_campaign({"grid": {**grid, "method": ["M1"], "adam_form": ["tf1"]}}, "test"))
    for spec in other:  # not the paper's settings: left out
        _record(store, spec, 700, 0.5)
    runs = runs_with_escape(store, "helmholtz", "jax", "M1")
    assert len(runs) == 10 and set(runs["adam_form"]) == {"standard"} and set(runs["method"]) == {"M1"}
    assert dict(zip(runs["seed"], runs["escape"])) == ESCAPE
    text = report(runs)
    assert "10 runs, 2 architectures" in text
    assert "sigma_0: 0.57200 to 0.57600" in text and "Spearman with the escape step +1.00" in text
    assert "sigma_1: 0.57700 in every run" in text  # constant: no correlation to speak of
    # each seed leaves at the same step on both widths: the seed decides, perfectly
    assert "Spearman over 1 pairs of architectures, mean +1.00" in text


def test_no_matching_run_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no run records in"):
        runs_with_escape(Store(tmp_path), "helmholtz", "jax", "M1")
    spec = expand(parse_campaign({"grid": {"problem": ["helmholtz"], "method": ["M2"]}}, "test"))[0]
    _record(Store(tmp_path), spec, 300, 0.5)
    with pytest.raises(SystemExit, match="no complete helmholtz M1 jax run with the paper's settings"):
        runs_with_escape(Store(tmp_path), "helmholtz", "jax", "M1")
