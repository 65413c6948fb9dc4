"""What a run needs in memory, estimated before anything is allocated, against what the machine has.

`gradpath run` and every campaign job call :func:`check_memory` before they create a record: a run
that cannot fit is a one-line usage error that states the estimate, instead of a traceback from
numpy, an out-of-memory kill that leaves the record ``running``, or hours of swapping.

The estimate (:func:`estimate_memory`) adds up, for ``lanes`` seeds trained as one program:

- the runtime: a framework, its compiled step, numpy and scipy (:data:`BASE_BYTES`);
- the parameters: the seed's float64 initial weights, kept for the whole run, and the trainer's
  state (parameters, Adam's m and v) before and after a step;
- the batches of one chunk (``--log-every`` steps, drawn at once): float64 uniforms, their images
  in each region, the cast, padded and device copies, and the warm-up batches;
- the largest transient: a training step (each term's points carry a jet of the input derivatives
  the term needs through every hidden layer, kept for the reverse pass, and the gradients), the
  error on the test grid (jets of the compared field), or the host copies of a checkpoint or a
  gradient record between chunks.

The step's bytes per (point, jet channel, hidden unit, hidden layer) are fitted to the peak
resident memory of two-step runs on a CPU (:data:`STEP_FACTOR`), with the calibration runs named
there; runs the calibration did not cover (a GPU, another backend) take the largest factor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gradpath.backends.jets import closure
from gradpath.backends.settings import TrainSettings, flag
from gradpath.problems.core import Problem, parse_derivative
from gradpath.problems.errors import UsageError

GIB = 2**30
# peak RSS of `gradpath run poisson1d --iterations 2 --log-every 2` (jax or torch --no-compile): 0.38-0.39 GiB
BASE_BYTES = GIB // 2
# Bytes per (point, jet channel, hidden unit, hidden layer) of a training step, in units of the
# dtype's size. Fitted to peak RSS on a 2-core CPU (float32, helmholtz 50 x 3, 2 steps, --log-every 2):
# jax M1 at --batch-size 50k/100k/200k: 0.84/1.28/2.13 GiB (8.5e-6 GiB per batch point over the
# 9 channel-points of a Helmholtz batch point (5 residual channels, 4 boundary edges) x 50 x 3, i.e.
# 1.6 dtype-sizes each); 100 x 6 layers at 100k: 2.08 GiB (the same 1.6 per layer); torch compiled
# at 50k/100k: 2.35/4.78 GiB (9.0), torch --no-compile 2.48/4.15 GiB (7-8).
STEP_FACTOR = {"jax": 1.7, "torch": 10.0}
# the gated net (M3, M4) carries two encoder jets and the gate's products: jax M4 at 100k/200k took
# 2.40/4.27 GiB, 2.2 times M1's slope (M3 2.32 GiB at 100k; M2 1.39 GiB, as M1 with its annealing)
GATED_FACTOR = 2.2
# host bytes per batch value: float64 uniforms, region images and stack (3 x 8), plus the cast,
# the padded copy, the device copy and the warm-up batches in the run's dtype (4 x dtype)
BATCH_FLOAT64_COPIES, BATCH_DTYPE_COPIES = 3, 4
# trainer state: parameters, Adam m and v, before and after a step (jax keeps both until the step returns)
STATE_COPIES = 6

# which options shrink each part of the estimate (named in the refusal)
ADVICE = {
    "training step": ("batch_size", "width", "depth"),
    "parameters and Adam state": ("width", "depth"),
    "batches": ("batch_size", "log_every"),
    "test-grid evaluation": ("width",),
    "checkpoint and gradient records": ("width", "depth"),
}


@dataclass
class MemoryEstimate:
    """Estimated peak bytes of a run, by part (the keys of :data:`ADVICE` plus ``runtime``).

    Attributes:
        parts: bytes of each part that is held at the peak (the runtime, the parameters, the
            batches, and the largest of the transients).
        host: the bytes of ``parts`` that live in host memory whatever the device (numpy arrays).
        transients: every transient, also those smaller than the one counted in ``parts``.
    """

    parts: dict[str, int] = field(default_factory=dict)
    host: int = 0
    transients: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """All parts: the peak on a CPU, where the device's memory is the host's."""
        return sum(self.parts.values())

    def describe(self) -> str:
        """``"training step 11.0 GiB, batches 1.2 GiB, ..."``: the parts, largest first."""
        parts = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {format_bytes(v)}" for k, v in parts)

    def largest(self) -> str:
        """The part that needs the most memory (never the runtime, which no option changes)."""
        return max((k for k in self.parts if k in ADVICE), key=self.parts.__getitem__)


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units with three significant digits, e.g. ``"74.5 GiB"``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.3g} {units[i]}" if i else f"{int(n)} B"


def parameter_count(layers: tuple[int, ...], gated: bool) -> int:
    """Trainable numbers of the network ``layers`` (weights, biases; the gated net's two encoders too)."""
    count = sum(a * b + b for a, b in zip(layers[:-1], layers[1:]))
    if gated:
        count += 2 * (layers[0] * layers[1] + layers[1])
    return count


def _channels(problem: Problem, needs: tuple[str, ...]) -> int:
    """Jet channels carried through the network for ``needs``: the value and every derivative on the way."""
    return len(closure(parse_derivative(k, problem.inputs, problem.outputs)[1] for k in needs))


def estimate_memory(problem: Problem, settings: TrainSettings, backend: str, lanes: int = 1) -> MemoryEstimate:
    """The peak memory of training ``settings`` on ``problem`` with ``backend``, ``lanes`` seeds at once.

    Pure arithmetic on the sizes: nothing is allocated, so a run of any size can be estimated.
    """
    size = 8 if settings.dtype == "float64" else 4
    layers = settings.layers_for(problem)
    width, depth = layers[1], len(layers) - 2
    gated = settings.method_spec.net == "gated"
    factor = STEP_FACTOR.get(backend, max(STEP_FACTOR.values())) * (GATED_FACTOR if gated else 1.0)
    n_params = parameter_count(layers, gated)
    terms = problem.terms()
    chunk = min(settings.log_every, settings.steps)
    batch_values = sum(len(t.regions) for t in terms) * settings.batch_size * len(problem.inputs)
    channel_points = sum(len(t.regions) * _channels(problem, t.needs) for t in terms) * settings.batch_size
    test_points = problem.test_points_per_axis ** len(problem.inputs)
    # per-term gradients of the annealing update (M2, M4), as the step's own gradient
    gradients = n_params * size * (1 + (len(terms) if settings.method_spec.anneal else 0))

    initial = 8 * n_params  # float64, kept by the seed's start for the whole run
    batch_host = chunk * batch_values * (8 * BATCH_FLOAT64_COPIES + size * BATCH_DTYPE_COPIES)
    records = n_params * size * (3 + 2 * len(terms))  # a checkpoint's state copy; each term's gradient, twice
    transients = {
        "training step": int(factor * size * channel_points * width * depth) + gradients,
        "test-grid evaluation": int(factor * size * test_points * _channels(problem, problem.solution_needs)
                                    * width * min(depth, 2)),
        "checkpoint and gradient records": records,
    }
    peak = max(transients, key=transients.__getitem__)
    parts = {"runtime": BASE_BYTES,
             "parameters and Adam state": lanes * (initial + STATE_COPIES * size * n_params),
             "batches": lanes * batch_host,
             peak: lanes * transients[peak]}
    host = lanes * (initial + batch_host) + (lanes * records if peak == "checkpoint and gradient records" else 0)
    return MemoryEstimate(parts, host + BASE_BYTES, {k: lanes * v for k, v in transients.items()})


def _meminfo_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Bytes this process's cgroup may still allocate (its limit less its usage), or None without a limit."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap, used = Path(limit).read_text().strip(), int(Path(usage).read_text())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 2**60:  # cgroup v1 writes a huge number for "no limit"
            return int(cap) - used
    return None


def _own_resident_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_bytes() -> int | None:
    """Host memory a run in this process can use: what it already holds plus what the system can still
    give it (MemAvailable, capped by a cgroup limit); physical memory where neither is known; None
    where nothing is known (then nothing is refused)."""
    room = _meminfo_bytes("MemAvailable")
    cgroup = _cgroup_room()
    if cgroup is not None:
        room = cgroup if room is None else min(room, cgroup)
    if room is None:
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    return room + _own_resident_bytes()


def device_bytes(backend: str, device: str) -> int | None:
    """Free memory on the GPU a ``cuda`` run of ``backend`` uses; None on a CPU or where the framework
    does not say (then only host memory is checked)."""
    if device != "cuda":
        return None
    try:
        if backend == "torch":
            import torch
            return int(torch.cuda.mem_get_info()[0])
        if backend == "jax":
            import jax
            stats = jax.devices("gpu")[0].memory_stats() or {}
            if "bytes_limit" in stats:  # jax preallocates a pool; what is left in it
                return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    except Exception:  # a framework that cannot say: host memory is still checked
        return None
    return None


def check_memory(problem: Problem, settings: TrainSettings, backend: str, device: str, *, lanes: int = 1,
                 other_options: tuple[str, ...] = ()) -> MemoryEstimate:
    """Raise a UsageError, stating the estimate, if the run cannot fit in this machine's memory.

    On a CPU the whole estimate must fit in host memory; on a GPU the host part (numpy arrays)
    in host memory and the rest in the GPU's free memory, where the framework says how much that is.

    Args:
        other_options: further options that shrink the run, named in the message (``--lanes``).

    Returns:
        The estimate, when it fits.
    """
    estimate = estimate_memory(problem, settings, backend, lanes)
    host = estimate.total if device != "cuda" else estimate.host
    checks = [("this machine has", host, available_bytes())]
    if device == "cuda":
        checks.append(("the GPU has", estimate.total - estimate.host, device_bytes(backend, device)))
    for where, need, have in checks:
        if have is not None and need > have:
            options = [flag(name) for name in ADVICE[estimate.largest()]] + list(other_options)
            lower = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
            raise UsageError(f"this run needs about {format_bytes(need)} of memory ({estimate.describe()}), "
                             f"but {where} {format_bytes(max(have, 0))} available; lower {lower}")
    return estimate


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: MemoryError (numpy's too), a framework's out-of-memory error."""
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return "OutOfMemoryError" in text or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()

