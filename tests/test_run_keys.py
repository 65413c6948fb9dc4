"""The run keys of every committed run stay what they were: a change that altered a key would make a
campaign retrain (and a report lose) runs that are already stored."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gradpath.suite.campaigns.definition import expand, load_campaign

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("preset", ["paper", "ablations", "smoke"])
def test_every_committed_run_keeps_its_key(preset):
    committed = pd.read_parquet(RESULTS / preset / "runs.parquet", columns=["key", "name"])
    planned = {spec.key: spec.name for spec in expand(load_campaign(preset))}
    assert set(committed["key"]) == set(planned)  # no committed run would be planned anew, none is lost
    assert dict(zip(committed["key"], committed["name"])) == planned
