"""REPORT.md's "Ablations" section, from hand-made runs whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradpath.suite.analysis.ablation import ablation_section, across_rows, variants
from gradpath.suite.analysis.tables import cell_stats, errors_by_cell

BASE = np.array([0.020, 0.018, 0.025, 0.022, 0.019, 0.021, 0.017, 0.024, 0.023, 0.016])


def _runs(errors=BASE, method="M2", depth=3, weighting="code", adam_form="standard", gate="code",
          backend="jax", seeds=None, width=50) -> list[dict]:
    seeds = range(len(errors)) if seeds is None else seeds
    return [{"problem": "helmholtz", "backend": backend, "method": method, "width": width, "depth": depth,
             "gate": gate, "weighting": weighting, "adam_form": adam_form, "seed": s, "status": "complete",
             "error": float(e), "param_a1": 1.0, "param_a2": 4.0, "param_k": 1.0} for s, e in zip(seeds, errors)]


def _variants(*groups: list[dict]) -> pd.DataFrame:
    runs = pd.DataFrame([row for group in groups for row in group])
    return variants(cell_stats(runs), errors_by_cell(runs))


def _section(*groups: list[dict]) -> str:
    runs = pd.DataFrame([row for group in groups for row in group])
    return ablation_section(cell_stats(runs), errors_by_cell(runs))


def test_a_one_setting_change_is_set_beside_its_default_baseline_and_paired_by_seed():
    table = _variants(_runs(), _runs(BASE / 2, weighting="paper"))
    assert len(table) == 1  # the baseline is not a variant of the variant: it holds the default
    row = table.iloc[0]
    assert (row["setting"], row["value"], row["baseline_value"]) == ("weighting", "paper", "code")
    assert row["change"] == pytest.approx(0.5)
    assert row["paper_ratio"] == pytest.approx(BASE.mean() / 2 / 0.0112)
    assert row["baseline_paper_ratio"] == pytest.approx(BASE.mean() / 0.0112)
    # the weighting leaves the network alone: seed s starts both from the same weights, so they are paired
    assert row["paired"] and row["pairs"] == 10 and row["ratio"] == pytest.approx(0.5)
    # every pair lower: Wilcoxon's exact two-sided p for n = 10 is 2 / 2^10
    assert row["p_value"] == pytest.approx(2 / 2 ** 10) and row["p_improvement"] == 1.0


def test_pairs_are_the_seeds_both_cells_have():
    factors = np.array([1.1, 1.2, 1.05, 1.15, 1.3, 1.08])
    table = _variants(_runs(), _runs(BASE[:6] * factors, weighting="paper"))
    row = table.iloc[0]
    assert row["paired"] and row["pairs"] == 6
    assert row["ratio"] == pytest.approx(10 ** np.log10(factors).mean())
    assert row["p_value"] == pytest.approx(2 / 2 ** 6)  # six positive differences, exact two-sided


def test_a_gate_form_draws_the_same_weights_so_it_is_paired():
    table = _variants(_runs(method="M4"), _runs(BASE * 0.77, method="M4", gate="paper"))
    row = table.iloc[0]
    assert row["setting"] == "gate" and row["paired"] and row["ratio"] == pytest.approx(0.77)


def test_another_depth_is_another_network_and_is_compared_unpaired():
    table = _variants(_runs(), _runs(BASE * 0.77, depth=4))
    row = table.iloc[0]
    assert row["setting"] == "depth" and not row["paired"]
    expected = stats.mannwhitneyu(np.log10(BASE * 0.77), np.log10(BASE), method="exact").pvalue
    assert row["p_value"] == pytest.approx(expected) and row["ratio"] == pytest.approx(0.77)


def test_the_papers_own_rows_are_not_ablations_but_an_unreported_depth_is():
    table = _variants(_runs(), _runs(depth=5), _runs(BASE * 0.7, depth=4))
    assert list(table["setting"]) == ["depth"] and list(table["value"]) == ["4"]
    assert table.iloc[0]["paper"] == pytest.approx(0.0112)  # judged against the row it stands in for
    assert not table.iloc[0]["paired"]  # another depth is another network


def test_two_non_default_values_or_two_changes_make_no_pair():
    groups = (_runs(weighting="paper"), _runs(weighting="mean"),  # neither holds the default
              _runs(method="M4"), _runs(method="M4", weighting="paper", adam_form="tf1"))  # two changes
    assert _variants(*groups).empty
    assert _section(*groups) == ""


def test_other_backends_and_methods_are_never_baselines():
    assert _variants(_runs(backend="torch"), _runs(method="M4", weighting="paper")).empty


def test_section_lists_each_variant_with_its_numbers_and_a_q_value():
    text = _section(_runs(), _runs(BASE * 1.05, adam_form="tf1"))
    assert text.startswith("## Ablations")
    assert "| helmholtz 50x3 | jax | M2 | `adam_form` tf1 (baseline standard) | 10, 10 | 2.15e-02 | 2.05e-02 | 1.05 | " \
           "1.05 [" in text
    assert "| yes | 0.002 | 0.002 | 0.00 |" in text  # paired; p = q with one row; P(variant lower) = 0


def test_a_change_tried_on_several_table2_rows_is_summed_up_across_them():
    """code-global on three Table 2 rows, each time 2/3 of the code's error: the summary gives the
    geometric mean of ours/paper over the rows before and after, and counts the rows."""
    rows = [(50, 3), (50, 5), (100, 3)]
    groups = []
    for width, depth in rows:
        groups += [_runs(BASE, method="M4", width=width, depth=depth),
                   _runs(BASE * 2 / 3, method="M4", width=width, depth=depth, weighting="code-global")]
    table = _variants(*groups)
    changes = table[table["setting"] == "weighting"]
    assert len(changes) == 3 and set(changes["configuration"]) == {"helmholtz 50x3", "helmholtz 50x5",
                                                                   "helmholtz 100x3"}
    (summary,) = across_rows(table).itertuples()
    before = np.exp(np.log(changes["baseline_paper_ratio"]).mean())
    assert summary.rows == 3 and summary.lower == 3 and summary.higher == 0
    assert summary.baseline_paper_geomean == pytest.approx(before)
    assert summary.variant_paper_geomean == pytest.approx(before * 2 / 3)
    nearer = (np.abs(np.log(changes["paper_ratio"])) < np.abs(np.log(changes["baseline_paper_ratio"]))).sum()
    assert summary.nearer_paper == nearer
    text = _section(*groups)
    assert "### Changes tried on several rows" in text and "geometric mean over 3 rows" in text
    assert across_rows(table[table["configuration"] != "helmholtz 50x3"]).empty  # two rows are not several
