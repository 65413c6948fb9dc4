"""Constant and frozen loss weights (issue 21, items 1 and 2): ``loss_weights`` holds M1/M3's weights
constant and sets M2/M4's initial lambdas; a run at the default weights keeps the key it had before;
``--loss-weight-from`` and ``loss_weights = ["frozen"]`` freeze the final lambdas of the annealed run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradpath.backends.conformance import small_settings
from gradpath.backends.replay import replay
from gradpath.backends.settings import TrainSettings
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError
from gradpath.suite.campaigns.definition import expand, load_campaign, plan
from gradpath.suite.cli.commands import main
from gradpath.suite.runs.frozen import final_weights, make_spec, partner_spec
from gradpath.suite.runs.record import CONFIG, HISTORY
from gradpath.suite.runs.store import Store, read_history

RESULTS = Path(__file__).resolve().parents[1] / "results"
TINY = ["--iterations", "20", "--log-every", "10", "--width", "8", "--depth", "2", "--batch-size", "16", "--quiet"]
try:
    import jax  # noqa: F401
    HAS_JAX = True
except ImportError:  # pragma: no cover
    HAS_JAX = False
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")


def _run_dir(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    return run


# -- settings and keys -----------------------------------------------------------------------------

def test_settings_keep_a_canonical_hashable_form():
    a = TrainSettings(loss_weights={"residual": 2, "boundary": 10.0})
    b = TrainSettings(loss_weights=[["boundary", 10], ["residual", 2.0]])  # as a spec's JSON gives it back
    assert a == b and hash(a) == hash(b)
    assert a.loss_weights == (("boundary", 10.0), ("residual", 2.0))


@pytest.mark.parametrize("value, message", [
    ({"boundary": -1.0}, "positive finite"), ({"boundary": float("nan")}, "positive finite"),
    ({"boundary": "10"}, "positive finite"), ({"boundary": True}, "positive finite"),
    ([["boundary", 1.0], ["boundary", 2.0]], "twice"), ("boundary=10", "term=weight pairs"),
    ({"boundary": 1e300}, "float32's range"),
])
def test_bad_weights_are_usage_errors(value, message):
    with pytest.raises(UsageError, match=message):
        TrainSettings(loss_weights=value)


def test_an_unknown_term_names_the_problems_terms():
    with pytest.raises(UsageError, match="unknown loss term 'bc' for helmholtz; choose one of: residual, boundary"):
        TrainSettings(loss_weights={"bc": 10.0}).resolved(get_problem("helmholtz"))


def test_default_weights_keep_every_committed_key():
    committed = pd.read_parquet(RESULTS / "paper" / "runs.parquet", columns=["key", "name"])
    keys = set(committed["key"])
    specs = expand(load_campaign("paper"))
    for spec in specs[:: max(1, len(specs) // 12)]:  # a dozen runs across the grid
        problem = get_problem(spec.problem, **spec.parameters)
        assert spec.key in keys and "loss_weights" not in spec.config["settings"]
        for default in ({}, {"residual": 1.0}, {name: 1 for name in problem.term_names()}):
            again = make_spec(spec.problem, problem, spec.backend, {**spec.settings, "loss_weights": default})
            assert again.key == spec.key and again.config == spec.config


def test_other_weights_change_the_key_and_enter_the_config_as_an_object():
    problem = get_problem("klein-gordon")
    plain = make_spec("klein-gordon", problem, "jax", {"method": "M1"})
    weighted = make_spec("klein-gordon", problem, "jax", {"method": "M1", "loss_weights": {"boundary": 10,
                                                                                           "residual": 1}})
    assert weighted.key != plain.key
    assert weighted.config["settings"]["loss_weights"] == {"boundary": 10.0}
    assert json.loads(json.dumps(weighted.config))["settings"]["loss_weights"] == {"boundary": 10.0}


# -- the step ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["M1", "M2"])
def test_initial_weights_follow_the_term_order(method):
    from gradpath.backends import get_backend

    problem = get_problem("klein-gordon")  # residual, initial, boundary
    settings = small_settings(method, loss_weights={"boundary": 10.0, "initial": 0.5})
    from gradpath.backends.data import seed_start

    start = seed_start(problem, settings)
    for backend in ("jax", "torch"):
        pytest.importorskip(backend)
        trainer = get_backend(backend).trainer(problem, settings, "cpu")
        exported = trainer.export(trainer.init(start.params, start.mu, start.sigma))["loss_weights"]
        np.testing.assert_array_equal(exported, [1.0, 0.5, 10.0])


def test_m1_weights_stay_constant_and_agree_across_backends():
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    problem = get_problem("helmholtz")
    settings = small_settings("M1", loss_weights={"boundary": 10.0})
    jax_run, torch_run = replay("jax", problem, settings, steps=20), replay("torch", problem, settings, steps=20)
    diff = torch_run.max_relative_difference(jax_run)
    assert max(diff.values()) <= 1e-9, diff
    np.testing.assert_array_equal(jax_run.weights, np.tile([1.0, 10.0], (20, 1)))
    plain = replay("jax", problem, small_settings("M1"), steps=20)
    np.testing.assert_array_equal(plain.losses[0], jax_run.losses[0])  # same start, same batch
    assert not np.allclose(plain.losses[-1], jax_run.losses[-1])  # the weighted loss was descended


# -- the command line ------------------------------------------------------------------------------

@needs_jax
def test_gradpath_run_records_constant_weights(tmp_path):
    out = tmp_path / "runs"
    assert main(["run", "poisson1d", *TINY, "--loss-weight", "boundary=10", "--out", str(out)]) == 0
    run = _run_dir(out)
    assert json.loads((run / CONFIG).read_text())["settings"]["loss_weights"] == {"boundary": 10.0}
    history = read_history(run / HISTORY)
    assert (history["weight_boundary"] == 10.0).all() and (history["weight_residual"] == 1.0).all()


@pytest.mark.parametrize("args, message", [
    (["--loss-weight", "boundary"], "not TERM=VALUE"), (["--loss-weight", "boundary=ten"], "not TERM=VALUE"),
    (["--loss-weight", "bc=10"], "unknown loss term 'bc' for poisson1d; choose one of: residual, boundary"),
    (["--loss-weight", "boundary=0"], "positive finite"),
    (["--loss-weight", "boundary=2", "--loss-weight", "boundary=3"], "twice"),
    (["--method", "M2", "--loss-weight-from", "x"], "frozen loss weights apply to M1, M3"),
    (["--loss-weight", "boundary=2", "--loss-weight-from", "x"], "keep one"),
])
def test_bad_loss_weight_options_are_usage_errors(tmp_path, capsys, args, message):
    assert main(["run", "poisson1d", *TINY, *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradpath: error: ") and err.count("\n") == 1 and message in err, err


# -- frozen annealed weights -----------------------------------------------------------------------

@needs_jax
def test_frozen_weights_from_the_annealed_run(tmp_path, capsys):
    store = tmp_path / "store"
    frozen_run = ["run", "poisson1d", *TINY, "--seed", "1", "--method", "M1", "--anneal-every", "5",
                  "--loss-weight-from", str(store), "--out", str(tmp_path / "frozen")]
    assert main(frozen_run) == 2  # no annealed run yet
    assert "not complete; train it first" in capsys.readouterr().err

    source = tmp_path / "frozen.toml"
    source.write_text("""
[grid]
problem = ["poisson1d"]
method = ["M1", "M2"]
seed = [1]
loss_weights = ["frozen"]
[settings]
steps = 20
log_every = 10
width = 8
depth = 2
batch_size = 16
anneal_every = 5
""")
    campaign = load_campaign(str(source))
    first = plan(campaign, Store(store, create=False))
    assert [s.settings["method"] for s in first.specs] == ["M2"]
    (waiting,) = first.waiting
    assert waiting.partner.key == first.specs[0].key and "not complete" in waiting.reason
    assert main(["campaign", str(source), "--store", str(store), "--dry-run"]) == 0
    assert "waiting    poisson1d-M1-jax-s1" in capsys.readouterr().out

    # one campaign trains M2, then plans M1 again with M2's final lambdas and trains it
    assert main(["campaign", str(source), "--store", str(store), "--quiet", "--jobs", "1"]) == 0
    second = plan(campaign, Store(store, create=False))
    assert not second.waiting and len(second.specs) == 2
    m2 = next(s for s in second.specs if s.settings["method"] == "M2")
    m1 = next(s for s in second.specs if s.settings["method"] == "M1")
    final = final_weights(Store(store, create=False), m2)
    assert m1.config["settings"]["loss_weights"] == {k: v for k, v in final.items() if v != 1.0}
    assert Store(store, create=False).state(m1).status == "complete"
    assert partner_spec("poisson1d", get_problem("poisson1d"), "jax", {**m1.settings, "anneal_every": 5}).key == m2.key
    history = read_history(Store(store).path(m1) / HISTORY)
    for term, value in final.items():
        assert (history[f"weight_{term}"] == value).all()

    # the same numbers by hand, and --loss-weight-from, name the same run
    assert main(frozen_run) == 0
    frozen_dir = _run_dir(tmp_path / "frozen")
    assert frozen_dir.name == m1.name
    by_hand = [f"--loss-weight={term}={value!r}" for term, value in final.items()]
    assert main(["run", "poisson1d", *TINY, "--seed", "1", *by_hand, "--out", str(tmp_path / "frozen")]) == 2
    assert "already holds a complete run" in capsys.readouterr().err

    # the published tables rebuild both runs, the frozen one under its key (its partner's restored weights)
    assert main(["report", "--preset", str(source), "--store", str(store), "--out", str(tmp_path / "tables")]) == 0
    capsys.readouterr()
    assert main(["restore", "--preset", str(source), "--store", str(tmp_path / "again"),
                 "--from", str(tmp_path / "tables")]) == 0
    assert "2 runs; from" in capsys.readouterr().out
    assert Store(tmp_path / "again", create=False).state(m1).status == "complete"
