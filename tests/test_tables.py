"""The paper's tables from hand-made runs tables: every statistic checked against a hand computation."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from gradpath.suite.analysis import statistics
from gradpath.suite.analysis.tables import build_tables, cell_stats, errors_by_cell, paper_results, write_result_tables

NAN = float("nan")


def _run(problem, method, seed, error, status="complete", width=50, depth=3, ms=1.0, **params):
    return {"problem": problem, "backend": "jax", "method": method, "width": width, "depth": depth, "seed": seed,
            "steps": 40001, "lr": 1e-3, "status": status, "error": error, "ms_per_step": ms,
            **{f"param_{k}": v for k, v in params.items()}}


HELMHOLTZ = {"a1": 1.0, "a2": 4.0, "k": 1.0}
KG = {"alpha": -1.0, "beta": 0.0, "gamma": 1.0, "k": 3}


@pytest.fixture
def runs() -> pd.DataFrame:
    rows = [
        _run("helmholtz", "M1", 0, 0.1, **HELMHOLTZ),
        _run("helmholtz", "M1", 1, 0.2, **HELMHOLTZ),
        _run("helmholtz", "M1", 2, 0.3, **HELMHOLTZ),
        _run("helmholtz", "M1", 3, NAN, "diverged", **HELMHOLTZ),
        _run("helmholtz", "M4", 0, 0.01, **HELMHOLTZ),
        _run("helmholtz", "M4", 1, 0.03, **HELMHOLTZ),
        _run("helmholtz", "M4", 2, NAN, "failed", **HELMHOLTZ),
        _run("helmholtz", "M1", 0, 0.05, **{**HELMHOLTZ, "a2": 1.0}),  # not the paper's case
        _run("helmholtz", "M4", 0, NAN, "diverged", **{**HELMHOLTZ, "a2": 1.0}),
        _run("helmholtz", "M4", 1, NAN, "diverged", **{**HELMHOLTZ, "a2": 1.0}),
        _run("klein-gordon", "M1", 0, 0.2, width=50, depth=5, ms=5.0, **KG),
        _run("klein-gordon", "M1", 1, 0.1, width=50, depth=5, ms=7.0, **KG),
        _run("klein-gordon", "M2", 0, 0.01, width=50, depth=5, ms=9.0, **KG),
        _run("cavity", "M4", 0, 0.05, Re=100.0, form="psi-p", reference_n=256),
        _run("cavity", "M1", 0, 0.7, Re=100.0, form="u-v-p", reference_n=256),
        _run("cavity", "M1", 1, NAN, "missing", Re=100.0, form="u-v-p", reference_n=256),
    ]
    for row in rows:
        row["metric"] = "rel_spectral" if row["problem"] == "cavity" else "rel_l2"
    return pd.DataFrame(rows)


def _cell(cells, problem, method, **where):
    mask = (cells["problem"] == problem) & (cells["method"] == method)
    for key, value in where.items():
        mask &= cells[key] == value
    assert mask.sum() == 1
    return cells[mask].iloc[0]


def test_cell_statistics_by_hand(runs):
    cells = cell_stats(runs)
    m1 = _cell(cells, "helmholtz", "M1", param_a2=4.0)
    assert (m1["n"], m1["runs"], m1["diverged"], m1["failed"]) == (3, 4, 1, 0)  # the diverged run is counted
    assert m1["mean"] == pytest.approx(0.2) and m1["median"] == pytest.approx(0.2)
    assert m1["std"] == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)
    assert m1["geomean"] == pytest.approx((0.1 * 0.2 * 0.3) ** (1 / 3))
    geo = statistics.geometric_mean([0.1, 0.2, 0.3])  # the diverged run is not in it
    assert (m1["geomean_low"], m1["geomean_high"]) == (geo.low, geo.high)
    assert 0 < m1["geomean_low"] < m1["geomean"] < m1["geomean_high"]
    assert 0 < m1["median_low"] <= m1["median"] <= m1["median_high"]
    assert (m1["failures"], m1["failure_rate"]) == (0, 0.0)
    assert (m1["failure_low"], m1["failure_high"]) == pytest.approx(statistics.wilson_interval(0, 3))
    assert m1["paper_runs"] == 10 and m1["paper_verdict"].startswith("3 seeds: too few to test")
    assert m1["paper"] == 1.06e-01 and m1["ratio"] == pytest.approx(0.2 / 0.106)
    assert m1["improvement"] == pytest.approx(1.0)

    m4 = _cell(cells, "helmholtz", "M4", param_a2=4.0)
    assert (m4["n"], m4["runs"], m4["diverged"], m4["failed"]) == (2, 3, 0, 1)
    assert m4["mean"] == pytest.approx(0.02) and m4["std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert m4["geomean"] == pytest.approx(math.sqrt(0.01 * 0.03))
    assert m4["paper"] == 3.87e-03 and m4["ratio"] == pytest.approx(0.02 / 0.00387)
    assert m4["improvement"] == pytest.approx(0.2 / 0.02)  # mean of M1 / mean of M4, same row
    assert m4["paper_improvement"] == pytest.approx(0.106 / 0.00387)


def test_cells_of_other_configurations_stay_apart(runs):
    cells = cell_stats(runs)
    one = _cell(cells, "helmholtz", "M1", param_a2=1.0)
    assert one["n"] == 1 and one["mean"] == 0.05 and math.isnan(one["std"]) and math.isnan(one["geomean_low"])
    assert one["geomean"] == pytest.approx(0.05) and one["stats_note"] == "one seed: no interval"
    assert math.isnan(one["paper"])  # the paper reports a2 = 4 only
    gone = _cell(cells, "helmholtz", "M4", param_a2=1.0)
    assert gone["n"] == 0 and gone["diverged"] == 2 and math.isnan(gone["mean"])
    assert gone["stats_note"] == "every run diverged (2)" and math.isnan(gone["geomean"])
    assert math.isnan(gone["improvement"])


def test_klein_gordon_and_cavity_find_their_paper_values(runs):
    cells = cell_stats(runs)
    kg = _cell(cells, "klein-gordon", "M1")
    assert kg["paper"] == 1.79e-01 and kg["paper_seconds_40k"] == 200
    assert kg["mean"] == pytest.approx(0.15) and kg["ms_per_step"] == pytest.approx(6.0)
    assert kg["seconds_40k"] == pytest.approx(6.0 * 40001 / 1000)
    assert _cell(cells, "klein-gordon", "M2")["improvement"] == pytest.approx(0.15 / 0.01)
    assert _cell(cells, "cavity", "M4", param_form="psi-p")["paper"] == 3.42e-02  # Fig. 18
    uvp = _cell(cells, "cavity", "M1", param_form="u-v-p")
    assert uvp["paper"] == 7.84e-01 and uvp["runs"] == 2 and uvp["incomplete"] == 1 and uvp["n"] == 1  # Fig. 17


def test_wide_layout_is_the_papers(runs):
    tables = {t.spec.name: t for t in build_tables(runs)}
    assert list(tables) == ["table2", "table3", "cavity"]
    main = tables["table2"].main
    assert list(main.columns) == ["width", "depth", "a2", "M1", "M1 paper", "M1 vs paper", "M4", "M4 paper",
                                  "M4 vs paper"]
    paper_row = main[main["a2"] == 4.0].iloc[0]
    assert paper_row["M1"] == "2.00e-01 [n=3/4, 1 diverged]"
    assert paper_row["M1 paper"] == "1.06e-01" and paper_row["M4"].endswith("[n=2/3, 1 failed]")
    assert paper_row["M1 vs paper"] == "1.89x not tested"  # three seeds: too few for the test
    assert main[main["a2"] == 1.0].iloc[0]["M4"] == "- [n=0/2, 2 diverged]"
    robust = tables["table2"].robust
    row = robust[robust["a2"] == 4.0].iloc[0]
    assert row["M1 geo-mean [95% CI]"].startswith("1.82e-01 [") and row["M1 failed [95% CI]"].startswith("0/3 [0.00, ")
    assert robust[robust["a2"] == 1.0].iloc[0]["M1 geo-mean [95% CI]"] == "5.00e-02"
    assert robust[robust["a2"] == 1.0].iloc[0]["M4 geo-mean [95% CI]"] == "every run diverged (2)"
    ratio = tables["table2"].ratio[tables["table2"].ratio["a2"] == 4.0].iloc[0]
    assert ratio["M4 xM1"] == "10" and ratio["M4 xM1 paper"] == "27.4" and ratio["M1 ours/paper"] == "1.89"
    assert tables["table2"].time is None and tables["table3"].time is not None
    assert list(tables["cavity"].main["form"]) == ["psi-p", "u-v-p"]


def test_table_files(runs, tmp_path):
    written = write_result_tables(build_tables(runs), tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.{e}" for n in ("table2", "table3", "cavity")
                                                     for e in ("csv", "md", "tex"))
    back = pd.read_csv(tmp_path / "table2.csv")
    assert {"n", "mean", "std", "median", "median_low", "median_high", "geomean", "geomean_low", "geomean_high",
            "failures", "failure_rate", "failure_low", "failure_high", "diverged", "paper", "paper_runs", "ratio",
            "paper_verdict", "paper_p", "paper_q", "improvement"} <= set(back.columns)
    assert "ci95_low" not in back.columns  # a Student t interval cannot be defended on heavy-tailed errors
    md = (tmp_path / "table2.md").read_text()
    assert "| width | depth | a2 | M1 | M1 paper | M1 vs paper | M4 | M4 paper | M4 vs paper |" in md
    tex = (tmp_path / "table2.tex").read_text()
    assert r"\begin{tabular}" in tex and "±" not in tex


def test_no_bound_in_a_table_is_negative_for_a_positive_error():
    # a heavy-tailed cell: nine seeds near 1e-2, one stuck near 0.3 (Helmholtz 100 x 7 M2's shape)
    errors = [0.009, 0.011, 0.008, 0.01, 0.012, 0.0095, 0.0105, 0.009, 0.011, 0.31]
    runs = pd.DataFrame([_run("helmholtz", "M2", s, e, width=100, depth=7, **HELMHOLTZ) for s, e in enumerate(errors)])
    cell = cell_stats(runs).iloc[0]
    for column in ("median_low", "geomean_low", "failure_low"):
        assert cell[column] >= 0
    assert cell["failures"] == 1 and cell["failure_rate"] == pytest.approx(0.1)
    assert cell["paper_verdict"] in ("consistent", "ours higher", "ours lower")


def test_errors_by_cell_pairs_seeds_whatever_the_row_order(runs):
    shuffled = runs.sample(frac=1, random_state=7).reset_index(drop=True)
    errors, cells = errors_by_cell(shuffled), cell_stats(shuffled)
    m1 = _cell(cells, "helmholtz", "M1", param_a2=4.0)
    assert errors[m1.name].sort_index().to_dict() == {0: 0.1, 1: 0.2, 2: 0.3}
    assert set(errors) == set(cells.index)


def test_paper_results_ship_with_the_package():
    paper = paper_results()
    assert len(paper) == 55 and set(paper["problem"]) == {"helmholtz", "klein-gordon", "cavity"}
    assert paper[paper["problem"] == "cavity"]["parameters"].iloc[0] == {"form": "psi-p", "Re": 100.0}


def test_a_cell_whose_every_run_failed_says_so_in_every_layout():
    runs = pd.DataFrame([_run("helmholtz", "M2", s, NAN, "failed", **HELMHOLTZ) for s in range(3)]
                        + [_run("helmholtz", "M1", s, 0.1 + s / 100, **HELMHOLTZ) for s in range(3)])
    cell = _cell(cell_stats(runs), "helmholtz", "M2")
    assert cell["n"] == 0 and cell["failed"] == 3 and cell["stats_note"] == "every run failed (3)"
    table = build_tables(runs)[0]
    assert table.main.iloc[0]["M2"] == "- [n=0/3, 3 failed]" and table.main.iloc[0]["M2 vs paper"] == ""
    assert table.robust.iloc[0]["M2 geo-mean [95% CI]"] == "every run failed (3)"
    for frame in (table.main, table.robust, table.ratio):
        assert "nan" not in frame.to_string().lower()


def test_a_store_of_unfinished_runs_has_cells_but_no_statistics():
    # no run has finished: the runs table has no error column yet (`gradpath report` on a fresh store)
    runs = pd.DataFrame([{k: v for k, v in _run("helmholtz", "M1", s, NAN, "missing", **HELMHOLTZ).items()
                          if k not in ("error", "ms_per_step")} for s in range(2)])
    cell = cell_stats(runs).iloc[0]
    assert (cell["n"], cell["incomplete"]) == (0, 2) and cell["stats_note"] == "no seed finished with a finite error"
    assert build_tables(runs)[0].main.iloc[0]["M1"] == "- [n=0/2, 2 incomplete]"
