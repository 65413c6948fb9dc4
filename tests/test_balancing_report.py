"""The ``balancing`` preset's report (issue 21, items 4-5), from hand-made runs whose answers are known:
no training; the runs table and history are built as :func:`gradpath.suite.runs.store.gather` returns them."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradpath.suite.analysis.balancing import (DESIGN, FROZEN, HONEST, ORACLE, Design, agreement_table, answer,
                                               balancing_table, classify, honest_constant, missing_runs,
                                               oracle_constant, parse_weights, side_by_side_cost)
from gradpath.suite.campaigns.definition import expand, parse_campaign
from gradpath.suite.report.balancing_plots import balancing_figures, balancing_report
from gradpath.suite.report.build import build_report
from gradpath.suite.runs.record import RunRecord
from gradpath.suite.runs.store import Store

SEEDS = list(range(10))
# code's error per seed: spread so that a bootstrap interval has width
CODE = np.array([0.020, 0.018, 0.025, 0.022, 0.019, 0.021, 0.017, 0.024, 0.023, 0.016])
SIZE = {"helmholtz": (50, 3), "klein-gordon": (50, 5)}
TERMS = {"helmholtz": ("boundary",), "klein-gordon": ("initial", "boundary")}
FACTORS = {1: 3.0, 10: 1.6, 30: 1.3, 100: 1.5, 300: 2.0, 1000: 4.0}  # constant c's error / code's, every seed


def _final(problem: str, seed: int, rule: str) -> dict[str, float]:
    """An annealed run's final weights: residual 1 (code) and a per-seed boundary weight off any grid value."""
    return {"residual": 1.0, **{t: 17.123456789 + seed + 3 * i + (0 if rule == "code" else 5)
                                for i, t in enumerate(TERMS[problem])}}


class Runs:
    """A runs table and history under construction."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.history: list[dict] = []

    def add(self, problem: str, method: str, errors, *, weights: dict | None = None, weighting: str | None = None,
            backend: str = "jax", seeds=SEEDS, status: str = "complete", anneal_every: int = 10) -> None:
        width, depth = SIZE[problem]
        for seed, error in zip(seeds, errors):
            key = f"k{len(self.rows):04d}"
            w = weights(seed) if callable(weights) else weights
            self.rows.append({"key": key, "name": f"{problem}-{method}-{backend}-s{seed}-{key}", "problem": problem,
                              "backend": backend, "method": method, "width": width, "depth": depth, "gate": "code",
                              "weighting": weighting or "code", "anneal_every": anneal_every, "seed": seed,
                              "loss_weights": json.dumps(w) if w else np.nan, "status": status,
                              "error": float(error) if status == "complete" else np.nan,
                              "ms_per_step": {"M1": 1.0, "M3": 1.5}.get(method, 2.0 if weighting != "ntk" else 5.0)})
            if method in ("M2", "M4"):
                final = _final(problem, seed, weighting or "code")
                for step in (100, 200):
                    self.history.append({"key": key, "step": step, "rel_l2": float(error),
                                         **{f"weight_{t}": (v if step == 200 else 1.0) for t, v in final.items()}})

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return pd.DataFrame(self.rows), pd.DataFrame(self.history)


def _full(runs: Runs, problems=("helmholtz", "klein-gordon"), factors=FACTORS, rules=DESIGN.rules,
          skip: tuple[str, ...] = ()) -> Runs:
    """Every arm of the design on every seed: constants at ``factors`` x code, frozen 1.1 x code,
    relobralo 0.5 x code, every other rule 0.9 x code."""
    for problem in problems:
        for fixed, annealed in (("M1", "M2"), ("M3", "M4")):
            for c, factor in factors.items():
                if f"constant {c}" in skip:
                    continue
                weights = None if c == 1 else {t: float(c) for t in TERMS[problem]}
                runs.add(problem, fixed, CODE * factor(np.array(SEEDS)) if callable(factor) else CODE * factor,
                         weights=weights)
            if "frozen" not in skip:
                runs.add(problem, fixed, CODE * 1.1,
                         weights=lambda s, p=problem: {k: v for k, v in _final(p, s, "code").items() if v != 1})
            for rule in rules:
                if rule in skip:
                    continue
                runs.add(problem, annealed, CODE * (0.5 if rule == "relobralo" else 1.0 if rule == "code" else 0.9),
                         weighting=rule, anneal_every=100 if rule == "ntk" else 10)
    return runs


@pytest.fixture(scope="module")
def complete():
    runs, history = _full(Runs()).frames()
    arms = classify(runs, history)
    return runs, history, arms, balancing_table(arms)


def test_weights_are_read_from_json_mappings_pairs_or_nothing():
    assert parse_weights('{"boundary": 10.0}') == {"boundary": 10.0}
    assert parse_weights([["boundary", 3]]) == {"boundary": 3.0}
    assert parse_weights(np.nan) == {} and parse_weights(None) == {} and parse_weights("") == {}


def test_every_run_lands_in_its_arm_and_frozen_runs_are_recognised_by_their_partners_weights(complete):
    _, _, arms, _ = complete
    counts = arms.groupby(["group", "network", "arm"])["seed"].nunique()
    assert set(arms["group"]) == {"helmholtz 50x3", "klein-gordon 50x5"}
    for group in ("helmholtz 50x3", "klein-gordon 50x5"):
        for network in ("plain", "gated"):
            expected = {*(f"constant {c}" for c in FACTORS), FROZEN, *DESIGN.rules}
            assert set(counts[(group, network)].index) == expected
            assert (counts[(group, network)] == 10).all()
    frozen = arms[arms["arm"] == FROZEN]
    assert set(frozen["method"]) == {"M1", "M3"} and (frozen["kind"] == "frozen").all()
    assert not (arms["kind"] == "other").any()  # per-seed frozen numbers never pass for constants


def test_a_frozen_run_without_its_partners_history_is_never_taken_for_a_constant():
    runs, history = _full(Runs(), problems=("helmholtz",)).frames()
    arms = classify(runs, history.iloc[:0])
    frozen = arms[arms["method"].isin(["M1", "M3"]) & ~arms["arm"].str.startswith("constant")]
    assert len(frozen) == 20 and (frozen["kind"] == "other").all()
    assert set(arms.loc[arms["kind"] == "constant", "c"]) == set(map(float, FACTORS))


def test_a_rule_uniformly_twice_as_good_as_code_has_ratio_one_half_with_an_interval_below_one(complete):
    _, _, _, table = complete
    rows = table[table["arm"] == "relobralo"]
    assert len(rows) == 4
    assert rows["ratio"].to_numpy() == pytest.approx(0.5)
    assert (rows["ratio_high"] < 1).all() and (rows["pairs"] == 10).all()
    assert rows["p_value"].to_numpy() == pytest.approx(2 / 2 ** 10)  # ten negative differences, exact Wilcoxon
    assert (rows["q_value"] < 0.05).all() and (rows["p_improvement"] == 1).all()
    code = table[table["arm"] == "code"]
    assert (code["ratio"] == 1).all() and code["p_value"].isna().all()


def test_costs_are_relative_to_m1_and_to_the_same_network_unannealed(complete):
    _, _, _, table = complete
    gated_ntk = table[(table["arm"] == "ntk") & (table["network"] == "gated")].iloc[0]
    assert gated_ntk["cost_vs_m1"] == pytest.approx(5.0) and gated_ntk["cost_vs_unannealed"] == pytest.approx(5 / 1.5)
    plain_code = table[(table["arm"] == "code") & (table["network"] == "plain")].iloc[0]
    assert plain_code["cost_vs_m1"] == pytest.approx(2.0)


def test_side_by_side_costs_replace_the_runs_own_timings(complete):
    """A cost measurement of one seed per configuration (as `gradpath bench --campaign` writes it) sets
    the cost columns: a rule's from its own configuration, the selected and frozen rows from the
    constants' median; a configuration the measurement lacks keeps its runs' timing."""
    runs, _, _, table = complete
    one_seed = runs[(runs["seed"] == 0) & (runs["problem"] == "helmholtz")].copy()
    fixed = {"M1": 2.0, "M3": 3.0}  # whatever their weights: constant weights cost what M1 (M3) costs
    annealed = {("M2", "relobralo"): 2.2, ("M4", "code"): 4.0}
    one_seed["ms_per_step"] = [fixed.get(m) or annealed.get((m, w), 9.0)
                               for m, w in zip(one_seed["method"], one_seed["weighting"])]
    # the frozen run of seed 0 is a lone set of weights off the grid: it is not a constant
    cost = one_seed.drop(columns=["error", "status", "key"])
    priced = side_by_side_cost(table, cost)
    helm = priced[priced["group"] == "helmholtz 50x3"].set_index(["network", "arm"])
    assert helm.loc[("plain", "relobralo"), "cost_vs_m1"] == pytest.approx(1.1)
    assert helm.loc[("gated", "code"), "cost_vs_m1"] == pytest.approx(2.0)
    assert helm.loc[("gated", "code"), "cost_vs_unannealed"] == pytest.approx(4 / 3)
    assert helm.loc[("gated", "constant 100"), "cost_vs_unannealed"] == pytest.approx(1.0)
    assert helm.loc[("plain", HONEST), "cost_vs_m1"] == pytest.approx(1.0)
    assert helm.loc[("plain", FROZEN), "cost_vs_m1"] == pytest.approx(1.0)
    assert (helm["cost_source"] == "side by side").all()
    kg = priced[priced["group"].str.startswith("klein-gordon")]
    assert (kg["cost_source"] == "runs").all()  # not measured: the runs' own timing stays, and says so
    assert kg["cost_vs_m1"].tolist() == table.loc[kg.index, "cost_vs_m1"].tolist()
    assert (side_by_side_cost(table, None)["cost_source"] == "runs").all()


def test_oracle_and_honest_constants_on_uniform_factors(complete):
    _, _, _, table = complete
    oracle = table[table["arm"] == ORACLE]
    honest = table[table["arm"] == HONEST]
    assert (oracle["c"] == 30).all() and oracle["ratio"].to_numpy() == pytest.approx(1.3)
    assert honest["ratio"].to_numpy() == pytest.approx(1.3)  # 30 is best on either half
    assert (honest["ratio_low"] > 1).all()


def test_a_constant_best_on_seeds_0_to_4_but_not_5_to_9_is_scored_on_the_seeds_it_was_not_chosen_on():
    first = np.array(SEEDS) < 5
    constants = {10.0: pd.Series(np.where(first, 0.5, 2.0), index=SEEDS),  # best on 0-4 only
                 100.0: pd.Series(np.where(first, 1.5, 1.0), index=SEEDS),  # best on 5-9 only
                 1000.0: pd.Series(1.2, index=SEEDS)}  # best overall: the oracle
    honest = honest_constant(constants, DESIGN.halves)
    assert [(c, a, b) for c, a, b in honest.choices] == [(10.0, (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)),
                                                        (100.0, (5, 6, 7, 8, 9), (0, 1, 2, 3, 4))]
    assert list(honest.errors.index) == SEEDS
    assert honest.errors.to_numpy() == pytest.approx(np.where(first, 1.5, 2.0))  # each scored out of sample
    oracle = oracle_constant(constants)
    assert oracle.choices[0][0] == 10.0  # geometric mean 1.0 beats 1000's 1.2 over every seed


def test_honest_selection_skips_a_constant_that_diverged_where_it_is_chosen():
    constants = {10.0: pd.Series([0.1, np.nan, 0.1, 0.1, 0.1, 1, 1, 1, 1, 1], index=SEEDS, dtype=float),
                 30.0: pd.Series(0.5, index=SEEDS)}
    honest = honest_constant(constants, DESIGN.halves)
    assert honest.choices[0][0] == 30.0


def test_the_answer_follows_the_decision_rule(complete):
    runs, history, arms, table = complete
    text = answer(table, missing_runs(arms))
    assert text.startswith("**Answer: yes.**")  # honest / code = 1.3 [1.3, 1.3] everywhere
    # a constant better than code on every seed: "no"
    better = {c: f * 0.5 for c, f in FACTORS.items()}
    runs2, history2 = _full(Runs(), factors=better).frames()
    arms2 = classify(runs2, history2)
    assert answer(balancing_table(arms2), missing_runs(arms2)).startswith("**Answer: no.**")


def test_noise_around_code_cannot_decide():
    wobble = {c: (lambda s: np.where(np.array(s) % 2 == 0, 0.8, 1.25)) for c in FACTORS}
    runs, history = _full(Runs(), factors=wobble).frames()
    arms = classify(runs, history)
    assert answer(balancing_table(arms), missing_runs(arms)).startswith("**Answer: the data cannot decide it.**")


def test_missing_arms_or_seeds_mean_cannot_decide_and_are_listed():
    runs, history = _full(Runs(), skip=("constant 300", "ntk")).frames()
    runs = runs[~((runs["problem"] == "klein-gordon") & (runs["method"] == "M2") & (runs["weighting"] == "code")
                  & (runs["seed"] >= 7))]
    arms = classify(runs, history)
    missing = missing_runs(arms)
    table = balancing_table(arms)  # a partial store still gives its table
    assert not table.empty
    text = answer(table, missing)
    assert text.startswith("**Answer: cannot decide: runs missing**") and "constant 300" in text
    code = missing[(missing["arm"] == "code") & (missing["group"] == "klein-gordon 50x5")
                   & (missing["network"] == "plain")].iloc[0]
    assert code["seeds"] == (7, 8, 9) and code["why"] == "no record"
    assert {"ntk", "constant 300"} <= set(missing["arm"])
    assert not missing.loc[missing["arm"] == "ntk", "decision"].any()  # listed, but not needed by the answer
    # the other backend's runs are expected too
    assert set(missing.loc[missing["backend"] == "torch", "arm"]) == {"relobralo", "ntk"}


def test_an_empty_store_reports_instead_of_raising(tmp_path):
    arms = classify(pd.DataFrame(), pd.DataFrame())
    missing = missing_runs(arms)
    assert len(missing) and answer(balancing_table(arms), missing).startswith("**Answer: cannot decide: runs missing")
    text, files = balancing_report(pd.DataFrame(), pd.DataFrame(), tmp_path)
    assert "cannot decide: runs missing" in text and "Not drawn" in text


def test_backend_agreement_pairs_torch_with_jax_on_the_same_seeds():
    base = _full(Runs(), problems=("helmholtz",))
    for method in ("M2", "M4"):
        base.add("helmholtz", method, CODE[:3] * 0.5 * 1.02, weighting="relobralo", backend="torch", seeds=[0, 1, 2])
    runs, history = base.frames()
    table = agreement_table(classify(runs, history))
    assert len(table) == 2 and (table["backend"] == "torch").all() and (table["pairs"] == 3).all()
    assert table["ratio"].to_numpy() == pytest.approx(1.02)
    assert table["largest_factor"].to_numpy() == pytest.approx(1.02)


def test_the_figures_are_written_and_redraw_identically(complete, tmp_path):
    _, history, arms, table = complete
    drawn, skipped = balancing_figures(arms, history, table, tmp_path / "a")
    assert {f.name for f in drawn} == {"balancing-error-vs-weight", "balancing-weights", "balancing-profile"}
    assert not skipped
    for fig in drawn:
        assert all(p.is_file() and p.stat().st_size > 0 for p in fig.files)
    again, _ = balancing_figures(arms, history, table, tmp_path / "b")
    for one, two in zip(drawn, again):
        assert one.files[0].read_bytes() == two.files[0].read_bytes()


CAMPAIGN = """
name = "balancing"
[[grid]]
problem = ["poisson1d"]
method = ["M1"]
seed = [0, 1, 2, 3]
loss_weights = [{}, {boundary = 10.0}]
[[grid]]
problem = ["poisson1d"]
method = ["M2"]
seed = [0, 1, 2, 3]
[settings]
steps = 30
log_every = 10
width = 4
depth = 1
"""


def _record(store: Store, spec, error: float, boundary: float) -> Path:
    """A complete 30-step record (as tests/test_report_integrity.py writes one), the boundary weight ending at
    ``boundary``."""
    record = RunRecord.create(store.root, spec.config, {"started": "2025-01-01T00:00:00+00:00"})
    for step in (10, 20, 30):
        record.history.append({"step": step, "seconds": step / 100, "loss_residual": 1 / step,
                               "loss_boundary": 1 / step, "weight_residual": 1.0,
                               "weight_boundary": boundary if step == 30 else 1.0, "rel_l2": error * 30 / step})
    record.finish("complete", {"steps": 30, "error": error, "metric": "rel_l2", "rel_l2": error, "diverged": False,
                               "diverged_at_step": None, "ms_per_step": 1.0, "train_seconds": 0.03,
                               "wall_seconds": 0.05, "device": "cpu"},
                  {"W0": np.ones((1, 4)), "b0": np.zeros(4), "W1": np.ones((4, 1)), "b1": np.zeros(1)})
    return record.path


def test_a_campaign_named_balancing_gets_the_section_in_its_report(tmp_path):
    campaign = parse_campaign(tomllib.loads(CAMPAIGN), "balancing.toml")
    specs = expand(campaign)
    store = Store(tmp_path / "store")
    for i, spec in enumerate(specs):
        weighted = bool(spec.config["settings"].get("loss_weights"))
        method = spec.settings["method"]
        error = 0.1 * (1 + spec.settings["seed"] / 10) * (0.5 if method == "M2" else 0.8 if weighted else 1.0)
        _record(store, spec, error, 5.0 + spec.settings["seed"] if method == "M2" else 1.0)
    out = tmp_path / "results"
    build_report(campaign, specs, store, out)
    report = (out / "REPORT.md").read_text()
    assert "## Loss balancing: does annealing beat a tuned constant weight?" in report
    assert "cannot decide: runs missing" in report  # the design's Helmholtz and Klein-Gordon are absent
    table = pd.read_csv(out / "balancing.csv")
    assert {"constant 1", "constant 10", ORACLE, HONEST, "code"} <= set(table["arm"])
    code = table[table["arm"] == "code"].iloc[0]
    assert code["n"] == 4
    assert (out / "figures" / "balancing-error-vs-weight.png").is_file()
    assert "figures/balancing-error-vs-weight.png" in report
    # another campaign's report has no such section
    other = parse_campaign(tomllib.loads(CAMPAIGN.replace('name = "balancing"', 'name = "other"')), "other.toml")
    build_report(other, specs, store, tmp_path / "other")
    assert "Loss balancing" not in (tmp_path / "other" / "REPORT.md").read_text()


def test_a_smaller_design_decides_on_what_it_names():
    design = Design(problems=("helmholtz",), networks=("plain",), constants=(1, 10), rules=("code", "relobralo"),
                    seeds=tuple(range(10)), frozen=False, agreement_backend="")
    runs = Runs()
    runs.add("helmholtz", "M1", CODE * 2)
    runs.add("helmholtz", "M1", CODE * 1.5, weights={"boundary": 10.0})
    runs.add("helmholtz", "M2", CODE, weighting="code")
    runs.add("helmholtz", "M2", CODE * 0.5, weighting="relobralo")
    frame, history = runs.frames()
    arms = classify(frame, history, design)
    missing = missing_runs(arms, design)
    assert missing.empty
    assert answer(balancing_table(arms, design), missing, design).startswith("**Answer: yes.**")
