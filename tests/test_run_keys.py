"""The run keys of every committed run stay what they were: a change that altered a key would make a
campaign retrain (and a report lose) runs that are already stored."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gradpath.problems import get_problem
from gradpath.suite.campaigns.definition import expand, load_campaign
from gradpath.suite.runs.frozen import make_spec

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("preset", ["paper", "ablations", "smoke"])
def test_every_committed_run_keeps_its_key(preset):
    committed = pd.read_parquet(RESULTS / preset / "runs.parquet", columns=["key", "name"])
    planned = {spec.key: spec.name for spec in expand(load_campaign(preset))}
    assert set(committed["key"]) == set(planned)  # no committed run would be planned anew, none is lost
    assert dict(zip(committed["key"], committed["name"])) == planned


def test_every_committed_balancing_run_keeps_its_key():
    """The balancing preset plans its frozen-weights runs from a store (the final weights of each
    partner), so without one they are not planned: every other committed key must be planned as it is,
    and each frozen run's key must follow from the weights the table gives it, as a campaign makes it."""
    committed = pd.read_parquet(RESULTS / "balancing" / "runs.parquet")
    planned = {spec.key: spec for spec in expand(load_campaign("balancing"))}
    assert set(planned) <= set(committed["key"])
    names = dict(zip(committed["key"], committed["name"]))
    assert all(names[key] == spec.name for key, spec in planned.items())
    constant = {(s.problem, s.backend, s.settings["method"], s.settings["seed"]): s for s in planned.values()
                if s.settings.get("loss_weights")}  # a constant-weights run of each problem, method and seed
    frozen = committed[~committed["key"].isin(planned)]
    assert len(frozen) and set(frozen["method"]) <= {"M1", "M3"}
    for row in frozen.itertuples():
        twin = constant[(row.problem, row.backend, row.method, row.seed)]
        spec = make_spec(twin.problem, get_problem(twin.problem, **twin.parameters), twin.backend,
                         {**twin.settings, "loss_weights": json.loads(row.loss_weights)})
        assert (spec.key, spec.name) == (row.key, row.name)
