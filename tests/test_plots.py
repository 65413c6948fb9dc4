"""Report figures: drawn from real tiny runs, saved as PNG and PDF, listed in REPORT.md, skipped without data,
the field plots' numpy prediction equal to the trainer's own, and axes and titles that read."""

from __future__ import annotations

import importlib.util
import json
import struct

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from gradpath.backends.data import seed_start
from gradpath.backends.init import init_params
from gradpath.suite.campaigns.definition import expand, load_campaign, parse_campaign
from gradpath.suite.runs.job import run_one
from gradpath.suite.report.style import STYLE
from gradpath.suite.report.plots import _configuration_columns, _count_x, _log_y, build_figures, run_prediction
from gradpath.suite.runs.record import CONFIG, PARAMS, RunRecord
from gradpath.suite.report.build import build_report
from gradpath.suite.runs.store import Store, gather

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")

TINY = """
name = "tinyplots"
description = "two problems, M1 and M2, two seeds, tiny nets"
[[grid]]
problem = ["poisson1d"]
method = ["M1", "M2"]
seed = [0, 1]
architecture = [[8, 1]]
[[grid]]
problem = ["helmholtz"]
method = ["M1", "M2"]
seed = [0, 1]
architecture = [[8, 1], [8, 2]]
[settings]
steps = 30
log_every = 10
"""


def _png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A store of 12 real runs (trained in this process) and the report built from it."""
    root = tmp_path_factory.mktemp("plots")
    source = root / "tiny.toml"
    source.write_text(TINY)
    campaign = load_campaign(str(source))
    specs = expand(campaign)
    store = Store(root / "store")
    for spec in specs:
        outcome = run_one(spec, str(store.root), ["test"])
        assert outcome["status"] == "complete", outcome
    files = build_report(campaign, specs, store, root / "results")
    return campaign, specs, store, root / "results", files


@needs_jax
def test_every_figure_is_written_as_png_and_pdf(tiny):
    _, _, _, out, files = tiny
    expected = ["error-step-poisson1d", "error-step-helmholtz", "error-time-poisson1d", "error-time-helmholtz",
                "weights-poisson1d", "weights-helmholtz", "fields-poisson1d",
                "fields-helmholtz-depth-1", "fields-helmholtz-depth-2", "table2",
                "performance-profiles"]  # gradpath.suite.report.profiles: across cells, drawn by the report
    figures = out / "figures"
    assert sorted(p.stem for p in figures.glob("*.png")) == sorted(expected)
    for name in expected:
        png, pdf = figures / f"{name}.png", figures / f"{name}.pdf"
        assert png in files and pdf in files
        width, height = _png_size(png)
        assert width >= 500 and height >= 300, (name, width, height)
        assert png.stat().st_size > 20_000, name  # drawn, not an empty canvas
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000, name


@needs_jax
def test_report_lists_every_figure_with_a_caption(tiny):
    _, _, _, out, _ = tiny
    text = (out / "REPORT.md").read_text()
    section = text.split("## Figures", 1)[1].split("## Files", 1)[0]
    for png in sorted((out / "figures").glob("*.png")):
        assert f"](figures/{png.name})" in section and f"(figures/{png.stem}.pdf)" in section
    assert section.count("**Figure ") == 11
    assert "min-max range over seeds" in section and "seeds 0-1" in section
    assert "median final relative L2 error" in section and "the paper reports no value for these settings" in section
    assert "Not drawn" not in section  # every figure had its data


@needs_jax
def test_a_report_rebuilt_from_the_same_store_is_byte_identical(tiny, tmp_path):
    # issue 20: no clock time in REPORT.md, seeded bootstrap intervals, figures without creation dates
    campaign, specs, store, out, _ = tiny
    again = tmp_path / "again"
    build_report(campaign, specs, store, again)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file()) == files
    assert {"REPORT.md", "comparisons.csv", "figures/performance-profiles.pdf"} <= {str(f) for f in files}
    assert [str(f) for f in files if (out / f).read_bytes() != (again / f).read_bytes()] == []
    report = (out / "REPORT.md").read_text()
    assert "| M2 vs M1 | yes | 2 |" in report  # M1 and M2 share the plain network: paired by seed


@needs_jax
def test_field_prediction_equals_the_trainers(tiny):
    from gradpath.backends import get_backend

    _, specs, store, _, _ = tiny
    for spec in (s for s in specs if s.problem == "helmholtz" and s.settings["method"] == "M2"):
        problem, x, ours, notes = run_prediction(store.path(spec))
        assert notes["normalisation"] == "params.npz"
        settings = spec.train_settings()
        trainer = get_backend("jax").trainer(problem, settings, "cpu")
        with np.load(store.path(spec) / PARAMS) as saved:
            params = {k: saved[k] for k in saved.files if k[0] in "Wb"}
            mu, sigma = saved["norm_mu"], saved["norm_sigma"]
        state = trainer.init(params, mu, sigma)
        d = trainer.predict(state, x, problem.solution_needs)
        theirs = problem.solution(np, x, {k: v.astype(np.float64) for k, v in d.items()})
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
        summary = json.loads((store.path(spec) / "summary.json").read_text())
        assert problem.metrics(ours, problem.reference(x))["rel_l2"] == pytest.approx(summary["error"], rel=1e-3)
        break


@needs_jax
@pytest.mark.parametrize("method, gate", [("M3", "code"), ("M4", "paper"), ("M3", "code-2020")])
def test_gated_prediction_equals_the_trainers(tmp_path, method, gate):
    """The gated forms, without training: parameters as initialised, written as a record would hold them."""
    from gradpath.backends import get_backend

    spec = expand(parse_campaign({"grid": {"problem": ["klein-gordon"]},
                                  "settings": {"method": method, "gate": gate, "width": 6, "depth": 2, "seed": 3}},
                                 "test"))[0]
    settings = spec.train_settings()
    problem_name = spec.problem
    from gradpath.problems import get_problem
    problem = get_problem(problem_name)
    start = seed_start(problem, settings)
    params, mu, sigma = start.params, start.mu, start.sigma
    record = RunRecord.create(tmp_path, spec.config, {"command": ["test"]})
    record.finish("complete", {"steps": 0}, {**{k: v.astype(np.float32) for k, v in params.items()},
                                             "loss_weights": np.ones(3, np.float32)})  # no norm_mu: older records
    _, x, ours, notes = run_prediction(record.path)
    assert notes["normalisation"] == "recomputed from the seed"
    trainer = get_backend("jax").trainer(problem, settings, "cpu")
    d = trainer.predict(trainer.init(params, mu, sigma), x, problem.solution_needs)
    np.testing.assert_allclose(ours, d["u"].astype(np.float64), rtol=0, atol=1e-5)


def _history(problem="helmholtz", methods=("M1", "M3"), seeds=(0, 1)):
    runs, rows = [], []
    for m in methods:
        for s in seeds:
            key = f"{m}{s}"
            runs.append({"name": f"{problem}-{m}-jax-s{s}-{key}", "key": key, "problem": problem, "backend": "jax",
                         "method": m, "seed": s, "width": 50, "depth": 3, "status": "complete", "error": 0.1})
            rows += [{"key": key, "step": step, "seconds": step / 100, "loss_residual": 1.0, "loss_boundary": 1.0,
                      "weight_residual": 1.0, "weight_boundary": 1.0, "rel_l2": 1.0 / step} for step in (10, 20, 30)]
    return pd.DataFrame(runs), pd.DataFrame(rows)


def test_figures_without_data_are_skipped_and_said(tmp_path):
    runs, history = _history()
    figures, skipped = build_figures(runs, history, tmp_path / "figures", tmp_path / "no-store")
    names = sorted(f.name for f in figures)
    assert names == ["error-step-helmholtz", "error-time-helmholtz"]
    reasons = {s.title.split(":")[0]: s.reason for s in skipped}
    assert "M2, M4" in reasons["Loss weights"]  # no annealing method
    assert any("cannot be evaluated" in s.reason for s in skipped if s.title.startswith("Solution fields"))
    assert "architecture" in reasons["Table 2 (Helmholtz architectures)"]
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        f"{n}.{e}" for n in names for e in ("png", "pdf"))


def test_no_runs_means_no_figures_and_stale_ones_removed(tmp_path):
    out = tmp_path / "figures"
    out.mkdir()
    (out / "old.png").write_bytes(b"stale")
    figures, skipped = build_figures(pd.DataFrame(), pd.DataFrame({"key": []}), out, tmp_path)
    assert figures == [] and len(skipped) == 1 and not (out / "old.png").exists()


def test_a_prediction_that_does_not_reproduce_the_recorded_error_is_not_drawn(tmp_path):
    """A record whose parameters do not give the error it recorded is never plotted as if they did."""
    spec = expand(parse_campaign({"grid": {"problem": ["poisson1d"]},
                                  "settings": {"width": 4, "depth": 1, "steps": 10, "log_every": 10}}, "test"))[0]
    problem_params = init_params((1, 4, 1), "mlp", np.random.default_rng(0))
    store = Store(tmp_path / "store")
    record = RunRecord.create(store.root, spec.config, {"command": ["test"]})
    record.history.append({"step": 10, "seconds": 0.1, "loss_residual": 1.0, "loss_boundary": 1.0,
                           "weight_residual": 1.0, "weight_boundary": 1.0, "rel_l2": 1e-3})
    record.finish("complete", {"steps": 10, "error": 1e-3, "metric": "rel_l2"},
                  {**problem_params, "norm_mu": np.zeros(1), "norm_sigma": np.ones(1)})
    runs, history = gather(store, [spec])
    figures, skipped = build_figures(runs, history, tmp_path / "figures", store.root)
    assert [f.name for f in figures] == ["error-step-poisson1d", "error-time-poisson1d"]
    assert any("but the run recorded 0.001" in s.reason for s in skipped)
    assert json.loads((store.path(spec) / CONFIG).read_text())["problem"] == "poisson1d"


def _axis_labels(fig, ax, which: str) -> list[tuple[float, str, object]]:
    """``(value, text, window extent)`` of each labelled tick of ``ax``'s ``which`` axis within its limits."""
    fig.canvas.draw()
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    renderer = fig.canvas.get_renderer()
    out = []
    for tick in axis.get_major_ticks():
        value = tick.get_loc()
        text = tick.label1.get_text()
        if text and tick.label1.get_visible() and lo <= value <= hi:
            out.append((value, text, tick.label1.get_window_extent(renderer)))
    return out


def _overlap(extents) -> bool:
    return any(a.overlaps(b) for i, a in enumerate(extents) for b in extents[i + 1:])


def test_step_axes_are_written_in_thousands_without_labels_running_together():
    with mpl.rc_context(STYLE):
        fig = MplFigure(figsize=(4, 3))  # one panel of a three-column figure
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot([0, 40001], [1, 0])
        _count_x(ax, "training step")
        labels = _axis_labels(fig, ax, "x")
    assert [text for _, text, _ in labels] == ["0", "10k", "20k", "30k", "40k"]
    assert not _overlap([extent for *_, extent in labels])


@pytest.mark.parametrize("lo, hi, least", [(0.95, 2.05, 3), (0.033, 0.105, 4), (0.03, 0.7, 4), (1e-5, 3e-5, 3),
                                           (0.004, 4.0, 3), (1e-6, 10.0, 5)])
def test_log_axes_label_enough_values_to_read_as_log(lo, hi, least):
    """However few decades the data span, a log axis shows three or more labels, in increasing order,
    none overlapping; whole decades only where three or more of them fall on the axis."""
    fig = MplFigure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [lo, hi])
    _log_y(ax)
    labels = _axis_labels(fig, ax, "y")
    values = [value for value, _, _ in labels]
    assert len(labels) >= least, [text for _, text, _ in labels]
    assert values == sorted(values) and len(set(text for _, text, _ in labels)) == len(labels)
    assert not _overlap([extent for *_, extent in labels])
    decades = [v for v in values if np.isclose(np.log10(v), round(np.log10(v)))]
    if len(decades) < len(values):  # finer than decades: only because fewer than three decades fall on it
        assert len(decades) < 3


def test_bookkeeping_settings_name_a_panel_only_when_nothing_else_does():
    """compile (and device, log_every) do not change the maths: a title names them only where two
    configurations differ in nothing else."""
    runs = pd.DataFrame({"problem": "helmholtz", "method": "M1", "seed": 0, "backend": ["jax", "torch"],
                         "compile": [True, False], "device": ["cpu", "cpu"], "width": [50, 50]})
    assert _configuration_columns(runs) == ["backend"]  # compile follows the backend (the smoke preset)
    both = pd.concat([runs, runs.assign(compile=True, seed=1)], ignore_index=True)
    assert _configuration_columns(both) == ["backend", "compile"]  # torch compiled and not: two panels
    assert _configuration_columns(both, exclude=["backend"]) == ["compile"]
