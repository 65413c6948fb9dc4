"""REPORT.md's "Ablations" section, from hand-made cells whose answers are known."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from suite.ablation import ablation_section, variants


def _cell(method="M2", depth=3, weighting="code", adam_form="standard", mean=0.02, std=0.004, n=10,
          paper=0.0112, backend="jax"):
    return {"problem": "helmholtz", "backend": backend, "method": method, "width": 50, "depth": depth,
            "gate": "code", "weighting": weighting, "anneal_alpha": math.nan, "adam_form": adam_form, "seed": 0,
            "n": n, "mean": mean, "std": std, "paper": paper}


def test_a_one_setting_change_is_set_beside_its_default_baseline():
    cells = pd.DataFrame([_cell(), _cell(weighting="paper", mean=0.01, std=0.002)])
    table = variants(cells)
    assert len(table) == 1  # the baseline is not a variant of the variant: it holds the default
    row = table.iloc[0]
    assert (row["setting"], row["value"], row["baseline_value"]) == ("weighting", "paper", "code")
    assert row["change"] == pytest.approx(0.5)
    assert row["ratio"] == pytest.approx(0.01 / 0.0112) and row["baseline_ratio"] == pytest.approx(0.02 / 0.0112)
    expected = stats.ttest_ind_from_stats(0.01, 0.002, 10, 0.02, 0.004, 10, equal_var=False).pvalue
    assert row["p_value"] == pytest.approx(expected)


def test_the_papers_own_rows_are_not_ablations_but_an_unreported_depth_is():
    cells = pd.DataFrame([_cell(), _cell(depth=5, paper=0.00743), _cell(depth=4, paper=math.nan, mean=0.015)])
    table = variants(cells)
    assert list(table["setting"]) == ["depth"] and list(table["value"]) == ["4"]
    assert table.iloc[0]["paper"] == pytest.approx(0.0112)  # judged against the row it stands in for


def test_two_non_default_values_or_two_changes_make_no_pair():
    cells = pd.DataFrame([_cell(weighting="paper"), _cell(weighting="mean"),  # neither holds the default
                          _cell(method="M4"), _cell(method="M4", weighting="paper", adam_form="tf1")])  # two changes
    assert variants(cells).empty
    assert ablation_section(cells) == ""


def test_other_backends_and_methods_are_never_baselines():
    cells = pd.DataFrame([_cell(backend="torch"), _cell(method="M4", weighting="paper")])
    assert variants(cells).empty


def test_section_lists_each_variant_with_its_numbers():
    text = ablation_section(pd.DataFrame([_cell(), _cell(adam_form="tf1", mean=0.021)]))
    assert text.startswith("## Ablations")
    assert "| helmholtz 50x3 | jax | M2 | `adam_form` tf1 (baseline standard) | 10, 10 | 2.10e-02 | 2.00e-02 | 1.05 |" \
        in text
