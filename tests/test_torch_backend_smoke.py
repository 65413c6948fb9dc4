"""The torch backend's own promises: devices, a warm-up that changes nothing, and the eager fallback.

Cross-backend agreement is tests/test_equivalence.py; these run on a tiny network so that the
one compiled case stays cheap.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gradpath.backends.data import draw_batches, seed_start
from gradpath.backends.settings import TrainSettings
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError

torch = pytest.importorskip("torch")
trainer_module = pytest.importorskip("gradpath.backends.torch.trainer")
packages = pytest.importorskip("gradpath.backends.torch.packages")

TINY = TrainSettings(method="M2", width=8, depth=1, batch_size=16, dtype="float64", steps=12, log_every=12,
                     compile="on")


def start(settings=TINY, problem_name="poisson1d"):
    """A trainer, its initial state and 12 steps of batches for ``settings``."""
    problem = get_problem(problem_name)
    trainer = trainer_module.TorchBackend().trainer(problem, settings, "cpu")
    start = seed_start(problem, settings)
    state = trainer.init(start.params, start.mu, start.sigma)
    batches = draw_batches(problem, start.batches, 12, settings.batch_size, settings.dtype)
    return trainer, state, batches


def test_devices():
    backend = trainer_module.TorchBackend()
    assert backend.resolve_device("cpu") == "cpu"
    assert backend.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert backend.versions()["torch"] == torch.__version__
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="choose one of: auto, cpu"):
            backend.resolve_device("cuda")


def test_warmup_compiles_everything_and_changes_no_state():
    trainer, state, batches = start()
    entries, before = dict(state), {k: v.clone() for k, v in state["params"].items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the eager fallback warns: it must not happen here
        assert trainer.warmup(state, batches) > 0
        compiled = dict(trainer._compiled)
        assert {key[0] for key in compiled} == {"step", "anneal", "predict"}
        assert all(fn is not trainer_module._EAGER for fn in compiled.values())
        assert all(state[k] is v for k, v in entries.items()) and int(state["count"]) == 0
        assert all(torch.equal(state["params"][k], before[k]) for k in before)
        _, out = trainer.train(state, batches)
        trainer.predict(state, get_problem("poisson1d").test_grid(), ("u",))
    assert trainer._compiled == compiled  # nothing left to compile once warmed up
    assert out.losses.shape == out.weights.shape == (12, 2)
    assert out.weights[0, 1] != 1.0 and out.weights[1, 1] == out.weights[0, 1]  # lambda moves at step 0 only


def test_compiled_graphs_load_again_untraced_and_a_failed_compile_falls_back_to_eager(monkeypatch, tmp_path):
    trainer, state, batches = start()  # compiled here, or loaded if an earlier test or run compiled TINY
    compiled_state, compiled_out = trainer.train(state, batches)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(trainer_module, "make_fx", broken)
    monkeypatch.setattr(packages, "make_fx", broken)
    again, _, _ = start()  # the same configuration: its packages load, nothing is traced or compiled
    assert again.compilation["cache"] == "warm"
    _, again_out = again.train(state, batches)
    assert again._loaded == 2  # step and anneal
    np.testing.assert_array_equal(again_out.losses, compiled_out.losses)
    np.testing.assert_array_equal(again_out.weights, compiled_out.weights)

    monkeypatch.setenv("GRADPATH_CACHE", str(tmp_path / "empty"))
    eager, _, _ = start()
    with pytest.warns(RuntimeWarning, match="running it eagerly") as record:
        eager_state, eager_out = eager.train(state, batches)
    fallbacks = [w for w in record if "running it eagerly" in str(w.message)]
    assert len(fallbacks) == 1  # once: the first failure puts the whole run on the eager route
    assert eager.compilation["route"] == "eager" and "compiling failed (RuntimeError)" in eager.compilation["reason"]
    np.testing.assert_allclose(eager_out.losses, compiled_out.losses, rtol=1e-12)
    np.testing.assert_allclose(eager_out.weights, compiled_out.weights, rtol=1e-12)
    for k, v in compiled_state["params"].items():
        np.testing.assert_allclose(eager_state["params"][k].numpy(), v.numpy(), rtol=1e-10, atol=1e-14)
