"""The balancing preset (does annealing beat a tuned constant weight?): what it trains and what it reuses."""

from __future__ import annotations

import json

from gradpath.suite.campaigns.definition import expand, load_campaign, plan
from gradpath.suite.campaigns.presets import BALANCING_CONSTANTS, BALANCING_RULES, NTK_EVERY
from gradpath.suite.runs.store import Store


def test_the_balancing_preset_reuses_the_paper_runs_and_waits_for_frozen_partners(tmp_path):
    balancing = plan(load_campaign("balancing"), Store(tmp_path))
    paper = {spec.key for spec in expand(load_campaign("paper"))}
    ablations = {spec.key for spec in expand(load_campaign("ablations"))}
    specs = balancing.specs
    settings = [spec.config["settings"] for spec in specs]
    # the code arm and the constant c = 1 are the paper preset's own runs: the same keys, not trained again
    code = [s for s, c in zip(specs, settings) if c["method"] in ("M2", "M4") and c["weighting"] == "code"
            and s.backend == "jax"]
    plain = [s for s, c in zip(specs, settings) if c["method"] in ("M1", "M3") and "loss_weights" not in c]
    assert len(code) == 40 and len(plain) == 40
    assert {s.key for s in code + plain} <= paper
    # code-global at Helmholtz 50 x 3 is the ablations preset's run
    assert any(s.key in ablations for s, c in zip(specs, settings) if c["weighting"] == "code-global")
    # constants: every term but the residual at c, each c once per problem, method and seed
    constants = {json.dumps(c["loss_weights"], sort_keys=True) for c in settings if "loss_weights" in c}
    assert len(constants) == 2 * (len(BALANCING_CONSTANTS) - 1)  # two problems' term sets; c = 1 has no entry
    assert {"boundary": 1000.0} in [c.get("loss_weights") for c in settings]
    assert {"initial": 10.0, "boundary": 10.0} in [c.get("loss_weights") for c in settings]
    # every rule in both networks, ntk every NTK_EVERY steps
    for rule in [*BALANCING_RULES, "ntk"]:
        runs = [c for s, c in zip(specs, settings) if c["weighting"] == rule and s.backend == "jax"]
        assert len(runs) == 2 * 2 * 10, rule  # problems x (M2, M4) x seeds
    assert {c["anneal_every"] for c in settings if c["weighting"] == "ntk"} == {NTK_EVERY}
    torch = [c for s, c in zip(specs, settings) if s.backend == "torch"]
    assert sorted({(c["weighting"], c["method"]) for c in torch}) == [("ntk", "M2"), ("ntk", "M4"),
                                                                      ("relobralo", "M2"), ("relobralo", "M4")]
    # frozen runs wait for their annealed partner (an empty store has none): one per problem, network and seed
    assert len(balancing.waiting) == 2 * 2 * 10


def test_the_report_expects_what_the_preset_trains():
    """The report's design (analysis/balancing.py, which may not import the campaigns room) lists the
    preset's constants, rules and seeds: a change to one without the other would misreport missing runs."""
    from gradpath.suite.analysis.balancing import DESIGN
    from gradpath.suite.campaigns.presets import SEEDS

    assert list(DESIGN.constants) == BALANCING_CONSTANTS
    assert set(DESIGN.rules) == {"code", *BALANCING_RULES, "ntk"}
    assert list(DESIGN.seeds) == SEEDS
