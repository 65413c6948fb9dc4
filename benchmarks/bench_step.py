"""Training-step speed, compile time and peak memory: problem x method x backend:device.

The paper's setting throughout: float32, batch 128 per region, seed 0, each problem's network
(Helmholtz [2,50,50,50,1], Klein-Gordon [2,50x5,1]). Compilation happens in ``setup``
and is reported apart by :class:`Compile`.
"""

from __future__ import annotations

from benchmarks.inputs import METHODS, PROBLEMS, TARGETS, TIMEOUT, backend_for, median_ms_per_step, prepare, settings_for

PARAMS = (PROBLEMS, METHODS, TARGETS)
# the target problem only where a combination costs a compilation per measurement:
# the whole suite has to finish in reasonable time on 2 cores
HELMHOLTZ_PARAMS = (["helmholtz"], METHODS, TARGETS)
PARAM_NAMES = ("problem", "method", "backend")  # the CLI's words


class TrainStep:
    """One training step (loss, derivatives, gradient, Adam; lambda every 10th step for M2/M4).

    Each call is one compiled call of one step followed by a device sync, so it carries the
    per-call dispatch that the harness spreads over 100-step chunks (see TrainChunk's
    ``track_ms_per_step`` for that number). Successive calls continue training, so M2/M4 anneal
    on every tenth call, as in a run.
    """

    params = PARAMS
    param_names = PARAM_NAMES
    timeout = TIMEOUT

    def setup(self, problem, method, backend):
        self.prepared = prepare(problem, method, backend, chunk=1)

    def time_step(self, problem, method, backend):
        self.prepared.train(1)


class TrainChunk:
    """Steps as the harness runs them: compiled chunks of 100 steps, synchronised after each."""

    params = HELMHOLTZ_PARAMS
    param_names = PARAM_NAMES
    timeout = TIMEOUT
    rounds = 1  # a track_ measures itself; one process per combination is enough

    def setup(self, problem, method, backend):
        self.prepared = prepare(problem, method, backend, chunk=100)

    def track_ms_per_step(self, problem, method, backend):
        """Median over 5 chunks of 100 steps, each ended by a device sync."""
        return median_ms_per_step(self.prepared, chunks=5, chunk=100)

    track_ms_per_step.unit = "ms/step"

    def peakmem_100_steps(self, problem, method, backend):
        """Peak resident memory of the process: imports, compilation and 100 steps."""
        self.prepared.train(100)


class Compile:
    """Compilation apart from training: building and warming up a 100-step trainer."""

    params = HELMHOLTZ_PARAMS
    param_names = PARAM_NAMES
    timeout = TIMEOUT
    rounds = 1

    def setup(self, problem, method, backend):
        backend_for(backend)  # skip absent devices; imports the framework outside the measurement
        settings_for(method, backend)

    def track_compile_seconds(self, problem, method, backend):
        """Seconds of Trainer.warmup (torch: with inductor's on-disk cache as the machine has it)."""
        return prepare(problem, method, backend, chunk=100).compile_seconds

    track_compile_seconds.unit = "seconds"
