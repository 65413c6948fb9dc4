"""Training-step speed, compile time and peak memory: problem x method x backend:device.

The paper's setting throughout: float32, batch 128 per region, seed 0, each problem's network
(Helmholtz [2,50,50,50,1], Klein-Gordon [2,50x5,1]), the step compiled. Compilation happens in
``setup`` and is reported apart by :class:`Compile`. Every timing is gradpath.suite.perf.timing's
(through benchmarks/compat.py); an absent device or a feature the commit lacks is a skip.
"""

from __future__ import annotations

from .compat import TIMEOUT, backend_for, prepare, timing

PROBLEMS = ["helmholtz", "klein-gordon"]
METHODS = ["M1", "M2", "M3", "M4"]
# "framework:device", as scipy's array-API benchmarks; a device that is absent is a skip
TARGETS = ["jax:cpu", "torch:cpu", "jax:cuda", "torch:cuda"]
PARAMS = (PROBLEMS, METHODS, TARGETS)
# the target problem only where a combination costs a compilation per measurement:
# the whole suite has to finish in reasonable time on 2 cores
HELMHOLTZ_PARAMS = (["helmholtz"], METHODS, TARGETS)
PARAM_NAMES = ("problem", "method", "backend")  # the CLI's words
CHUNK, CHUNKS = 100, 5
LANES = 5  # seeds per vectorised chunk, as a campaign's --lanes 5 job


class TrainStep:
    """One training step (loss, derivatives, gradient, Adam; lambda every 10th step for M2/M4).

    Each call is one compiled call of one step followed by a device sync, so it carries the
    per-call dispatch that the harness spreads over 100-step chunks (see TrainChunk's
    ``track_ms_per_step`` for that number). Successive calls continue training, so M2/M4 anneal
    on every tenth call, as in a run. asv's own repeats give the samples.
    """

    params = PARAMS
    param_names = PARAM_NAMES
    timeout = TIMEOUT

    def setup(self, problem, method, backend):
        self.prepared = prepare(problem, method, backend, chunk=1)

    def time_step(self, problem, method, backend):
        self.prepared.train(1)


class TrainChunk:
    """Steps as the harness runs them: compiled chunks of 100 steps, synchronised after each.

    Several samples, so that load on the machine does not flag: each process (round) reports the
    median of 5 chunks, and 3 rounds (processes, compiled afresh) give asv 3 samples to compare.
    """

    params = HELMHOLTZ_PARAMS
    param_names = PARAM_NAMES
    timeout = TIMEOUT
    rounds = 3

    def setup(self, problem, method, backend):
        self.prepared = prepare(problem, method, backend, chunk=CHUNK)

    def track_ms_per_step(self, problem, method, backend):
        """Median over 5 chunks of 100 steps, each ended by a device sync."""
        return timing().quartiles(timing().time_chunks(self.prepared, CHUNKS, CHUNK))[1]

    track_ms_per_step.unit = "ms/step"

    def peakmem_100_steps(self, problem, method, backend):
        """Peak resident memory of the process: imports, compilation and 100 steps."""
        self.prepared.train(CHUNK)


class TrainLanes:
    """Seeds trained as one vectorised program (a campaign's ``--lanes 5``): ms per seed-step.

    Skipped where the backend (in that commit) trains no seeds as lanes. Samples as :class:`TrainChunk`.
    """

    params = (["helmholtz"], ["M1", "M4"], TARGETS)
    param_names = PARAM_NAMES
    timeout = TIMEOUT
    rounds = 3

    def setup(self, problem, method, backend):
        self.prepared = prepare(problem, method, backend, chunk=CHUNK, lanes=LANES)

    def track_ms_per_seed_step(self, problem, method, backend):
        """Median over 5 chunks of 100 vectorised steps, divided by the 5 seeds."""
        return timing().quartiles(timing().time_chunks(self.prepared, CHUNKS, CHUNK))[1] / LANES

    track_ms_per_seed_step.unit = "ms/seed-step"


class Compile:
    """Compilation apart from training: building and warming up a 100-step trainer.

    One compile per process; 3 rounds (processes) give 3 samples.
    """

    params = HELMHOLTZ_PARAMS
    param_names = PARAM_NAMES
    timeout = TIMEOUT
    rounds = 3

    def setup(self, problem, method, backend):
        backend_for(backend)  # skip absent devices; imports the framework outside the measurement
        timing()

    def track_compile_seconds(self, problem, method, backend):
        """Seconds of Trainer.warmup (torch: with inductor's on-disk cache as the machine has it)."""
        return prepare(problem, method, backend, chunk=CHUNK).compile_seconds

    track_compile_seconds.unit = "seconds"
