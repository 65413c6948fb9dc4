"""gradpath.suite.analysis.backend_pairs (`gradpath analyse backend-pairs`): one seed in two backends, paired, and the step where they part."""

from __future__ import annotations

import pandas as pd
import pytest

from gradpath.suite.analysis.backend_pairs import pairs, parting_step, report


def _runs() -> pd.DataFrame:
    rows = []
    for backend, errors in (("jax", {0: 0.10, 1: 0.20}), ("torch", {0: 0.10005, 1: 0.30})):
        for seed, error in errors.items():
            rows.append({"problem": "helmholtz", "width": 50, "depth": 3, "method": "M1", "seed": seed,
                         "backend": backend, "status": "complete", "error": error,
                         "key": f"{backend}-{seed}", "device_used": "cpu"})
    rows.append({**rows[0], "seed": 2, "key": "jax-2"})  # only one backend: not paired
    return pd.DataFrame(rows)


def test_pairs_each_seed_across_backends_and_finds_where_they_part():
    paired = pairs(_runs())
    assert list(paired["seed"]) == [0, 1]
    assert paired["gap"].tolist() == pytest.approx([5e-4, 0.5])
    history = pd.DataFrame({"key": ["jax-1"] * 3 + ["torch-1"] * 3, "step": [0, 100, 200] * 2,
                            "rel_l2": [1.0, 0.9, 0.5, 1.0, 0.95, 0.6]})
    assert parting_step(history, "jax-1", "torch-1", "rel_l2", 0.01) == (100.0, 0.9, 0.95)
    assert parting_step(history, "jax-1", "torch-1", "rel_l2", 0.5) == pytest.approx((float("nan"),) * 3, nan_ok=True)
    text = report(paired, history, "rel_l2", 0.01)
    assert "plain, first backend on cpu: 2 pairs; <= 0.01%: 0, <= 0.1%: 1, <= 1%: 1, <= 3%: 1; largest 50%" in text
    assert "seed 1: 0.2 and 0.3, 50% apart; part at step 100 (error 0.9 and 0.95)" in text
    assert "0 of 1 within 1.1%" in text
