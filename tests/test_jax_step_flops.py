"""gradpath.suite.perf.jax_step_flops: XLA's flop count per step, for one seed and seeds vectorised."""

from __future__ import annotations

import pytest

pytest.importorskip("jax")

from gradpath.backends.jax.trainer import JaxTrainer  # noqa: E402
from gradpath.backends.settings import TrainSettings  # noqa: E402
from gradpath.suite.perf.jax_step_flops import main, measure  # noqa: E402
from gradpath.problems import get_problem  # noqa: E402


def test_vectorised_seeds_count_as_that_many_steps():
    one, two = measure("helmholtz", "M1", 2, steps=5, repeats=1)
    assert (one["seeds"], two["seeds"]) == (1, 2)
    # the seed axis adds the same work again, nothing more (the step count is shared, not batched)
    assert two["mflop_per_step"] == pytest.approx(2 * one["mflop_per_step"], rel=0.02)
    # at least the GEMMs of the 50 x 3 network's forward pass over one 128-point batch per term
    gemm_mflop = 2 * 128 * (2 * 50 + 2 * 50 * 50 + 50) / 1e6
    assert one["mflop_per_step"] > len(get_problem("helmholtz").terms()) * gemm_mflop
    for row in (one, two):  # the rate is the two measured columns' quotient (MFLOP per ms = GFLOP/s)
        assert row["gflop_per_s"] == pytest.approx(row["mflop_per_step"] / row["ms_per_step"], rel=1e-9)


def test_flops_need_the_compiled_step():
    trainer = JaxTrainer(get_problem("helmholtz"), TrainSettings(steps=5, log_every=5), "cpu")
    with pytest.raises(RuntimeError, match="call warmup first"):
        trainer.step_flops()


def test_one_lane_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--lanes", "1"])
    assert "needs at least 2 seeds" in capsys.readouterr().err
