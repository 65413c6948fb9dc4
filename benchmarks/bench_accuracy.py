"""Accuracy regressions: the error after a fixed number of fixed-seed steps.

A change that makes training faster but wrong shows up here, not in bench_step.
"""

from __future__ import annotations

from gradpath.backends.training import train
from benchmarks.inputs import METHODS, TARGETS, TIMEOUT, backend_for, settings_for
from gradpath.problems import get_problem

STEPS = 1000


class Accuracy:
    """Helmholtz (a1=1, a2=4), seed 0, the paper's settings, ``STEPS`` Adam steps."""

    params = (["helmholtz"], METHODS, TARGETS)
    param_names = ("problem", "method", "backend")
    timeout = TIMEOUT
    rounds = 1  # deterministic up to float32 reduction order: one run is the measurement

    def setup(self, problem, method, backend):
        backend_for(backend)

    def track_rel_l2_after_1000_steps(self, problem, method, backend):
        """Relative L2 error on the problem's 100x100 test grid (its primary metric)."""
        settings = settings_for(method, backend, steps=STEPS, log_every=STEPS)
        return train(get_problem(problem), settings, backend.split(":")[0]).summary["error"]

    track_rel_l2_after_1000_steps.unit = "relative L2"
