"""Plugins through entry points: the example package tests/plugin_example (problem ``poisson2d``).

CI installs it (README set-up: ``-e tests/plugin_example``); without it these tests are skipped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import pandas as pd
import pytest

import gradpath.backends
import gradpath.problems
from gradpath.backends import conformance as kit
from gradpath.problems import get_problem, problem_names, problem_sources
from gradpath.suite.cli.commands import main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gradpath_poisson2d") is None,
    reason="the example plugin is not installed: pip install -e tests/plugin_example")
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
TINY = ["--iterations", "30", "--log-every", "10", "--width", "8", "--depth", "2", "--quiet"]
STEPS = [10, 20, 30]  # the history rows TINY logs


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gradpath: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_plugin_is_listed_with_its_source(capsys):
    assert problem_sources()["poisson2d"] == "plugin gradpath_poisson2d:Poisson2D"
    assert main(["list"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("poisson2d"))
    assert "plugin gradpath_poisson2d:Poisson2D" in line and "a=1.0 b=2.0; net 2-50-50-50-1" in line


def test_plugin_passes_the_problem_kit():
    kit.check_problem(get_problem("poisson2d"))
    kit.check_problem(get_problem("poisson2d", a=3, b=1))


@pytest.mark.parametrize("backend, extra", [pytest.param("jax", [], marks=needs_jax),
                                            pytest.param("torch", ["--no-compile"], marks=needs_torch)])
def test_plugin_runs_in_each_backend(tmp_path, backend, extra):
    assert main(["run", "poisson2d", "--backend", backend, *TINY, *extra, "--out", str(tmp_path)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.name != ".locks"]  # the run; .locks holds the store's locks
    history = pd.read_csv(run / "history.csv")
    assert list(history["step"]) == STEPS and {"loss_residual", "loss_boundary"} <= set(history.columns)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["steps"] == STEPS[-1]


@needs_jax
@needs_torch
def test_plugin_campaign_in_both_backends(tmp_path, capsys):
    source = tmp_path / "p2.toml"
    source.write_text("""
name = "poisson2d-smoke"
[grid]
problem = ["poisson2d"]
method = ["M1", "M4"]
backend = ["jax", "torch"]
[settings]
steps = 20
log_every = 10
width = 8
depth = 2
compile = false
""")
    store = tmp_path / "store"
    assert main(["campaign", str(source), "--store", str(store), "--jobs", "2"]) == 0
    runs = pd.read_csv(store / "runs.csv")
    assert len(runs) == 4 and set(runs["backend"]) == {"jax", "torch"} and set(runs["status"]) == {"complete"}


class _BrokenEntryPoint(importlib.metadata.EntryPoint):
    def load(self):
        raise ImportError("No module named 'gradpath_broken'")


def _with_broken(group: str, real):
    def entry_points(*, group=group, **kwargs):
        eps = list(real(group=group, **kwargs))
        if group in ("gradpath.problems", "gradpath.backends"):
            eps.append(_BrokenEntryPoint("broken", "gradpath_broken:Thing", group))
        return eps
    return entry_points


@pytest.fixture
def broken_plugins(monkeypatch):
    real = importlib.metadata.entry_points
    monkeypatch.setattr(gradpath.problems, "entry_points", _with_broken("gradpath.problems", real))
    monkeypatch.setattr(gradpath.backends, "entry_points", _with_broken("gradpath.backends", real))
    gradpath.problems.problem_sources.cache_clear()
    gradpath.backends.get_backend.cache_clear()
    yield
    gradpath.problems.problem_sources.cache_clear()
    gradpath.backends.get_backend.cache_clear()


def test_a_broken_plugin_names_itself_and_breaks_nothing_else(broken_plugins, capsys, tmp_path):
    assert "broken" in problem_names() and "poisson2d" in problem_names()
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines() if l.strip().startswith("broken")]
    assert len(rows) == 2 and all("failed to load" in r and "gradpath_broken" in r for r in rows), out
    assert "poisson2d     plugin gradpath_poisson2d:Poisson2D  a=1.0" in out and "helmholtz" in out

    assert main(["run", "broken", *TINY, "--out", str(tmp_path)]) == 2
    err = _one_error_line(capsys)
    assert "problem plugin 'broken' (gradpath_broken:Thing) failed to load: ImportError:" in err
    assert main(["run", "poisson2d", "--backend", "broken", *TINY, "--out", str(tmp_path)]) == 2
    assert "backend plugin 'broken' (gradpath_broken:Thing) failed to load" in _one_error_line(capsys)
    if importlib.util.find_spec("jax"):
        assert main(["run", "poisson2d", "--backend", "jax", *TINY, "--out", str(tmp_path)]) == 0
