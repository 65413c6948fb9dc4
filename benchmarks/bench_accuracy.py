"""Accuracy regressions: the error after a fixed number of fixed-seed steps.

A change that makes training faster but wrong shows up here, not in bench_step.
"""

from __future__ import annotations

from .bench_step import METHODS, TARGETS
from .compat import SEED, TIMEOUT, backend_for, feature

STEPS = 1000


class Accuracy:
    """Helmholtz (a1=1, a2=4), seed 0, the paper's settings, ``STEPS`` Adam steps."""

    params = (["helmholtz"], METHODS, TARGETS)
    param_names = ("problem", "method", "backend")
    timeout = TIMEOUT
    rounds = 1  # deterministic up to float32 reduction order: one run is the measurement

    def setup(self, problem, method, backend):
        backend_for(backend)
        self.train = feature("backends.training", "train")
        self.problem = feature("problems", "get_problem")(problem)
        self.settings = feature("backends.settings", "TrainSettings")(
            method=method, device=backend.split(":")[1], seed=SEED, steps=STEPS, log_every=STEPS, compile=True)

    def track_rel_l2_after_1000_steps(self, problem, method, backend):
        """Relative L2 error on the problem's 100x100 test grid (its primary metric)."""
        return self.train(self.problem, self.settings, backend.split(":")[0]).summary["error"]

    track_rel_l2_after_1000_steps.unit = "relative L2"
