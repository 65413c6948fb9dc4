"""Checkpoints of the training loop: one seed's run at a chunk boundary, enough to go on as if never stopped.

A campaign on a small machine runs for days in sessions that end when they end; without
checkpoints every stop throws away the runs in flight (an hour of a cavity job). A checkpoint
holds everything :func:`gradpath.backends.training.train_seeds` carries from one chunk to the next:

- the trainer's state as named numpy arrays (:meth:`Trainer.snapshot`: parameters, Adam moments,
  loss weights, step count, input normalisation), bit for bit;
- the state of the seed's batch generator, so the batches after the checkpoint are the ones an
  uninterrupted run draws;
- the loop's counters and timings, the history so far and the gradient histograms so far.

A resumed run therefore equals the uninterrupted one exactly (the same compiled program on the
same inputs), apart from its timings. Framework-free; the suite decides where the file lives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradpath.backends.diagnostics import GradientRecord
from gradpath.problems.errors import UsageError

# the one state entry a multi-seed trainer shares between its seeds (gradpath.backends.protocol.Trainer)
SHARED = ("count",)
# bump when the layout changes: an older checkpoint is then refused, and the run starts afresh
FORMAT = 2  # 2: compile_route (a run resumed from a format-1 checkpoint could change route)


class CheckpointMismatch(UsageError):
    """A checkpoint that does not fit the run asked for (other settings, lanes or state layout)."""


@dataclass
class Checkpoint:
    """One seed of a run, stopped after ``step`` loop steps.

    Attributes:
        step: steps the loop has run (shared by the seeds trained together).
        state: :meth:`Trainer.snapshot` of this seed's state (no seed axis).
        batches: ``bit_generator.state`` of the seed's batch generator.
        done: steps this seed has taken (less than ``step`` once it diverged).
        diverged_at: 0-based step at which its loss became non-finite, or None.
        seconds, executed, chunk_ms: training time, steps executed and per-chunk ms/step so far.
        wall, compile_seconds: wall-clock and compile seconds of the processes so far.
        history: the history rows so far.
        gradients: the gradient histograms so far (None when not recorded).
        resumed_at: steps at which earlier processes stopped and a later one went on.
        lanes: seeds the writing process trained together (None: one seed, not vectorised). A
            seed of a vectorised run goes on vectorised, even alone: the batched kernels may
            round differently from the one-seed ones.
        compile_route: ``compiled``, ``traced`` or ``eager``, as the writing process ran its steps
            (None: a backend with one way only). The run goes on the same way, whatever
            ``--compile auto`` would choose now: the routes round differently.
    """

    step: int
    state: dict[str, np.ndarray]
    batches: dict[str, Any]
    done: int
    diverged_at: int | None
    seconds: float
    executed: int
    chunk_ms: list[float]
    wall: float
    compile_seconds: float
    history: list[dict[str, Any]]
    gradients: GradientRecord | None = None
    resumed_at: list[int] = field(default_factory=list)
    lanes: int | None = None
    compile_route: str | None = None

    _META = ("step", "batches", "done", "diverged_at", "seconds", "executed", "chunk_ms", "wall",
             "compile_seconds", "history", "resumed_at", "lanes", "compile_route")

    def arrays(self) -> dict[str, np.ndarray]:
        """The checkpoint as named numpy arrays (for ``np.savez``): state, gradients, and the rest as JSON."""
        meta = {k: getattr(self, k) for k in self._META}
        out = {"format": np.array(FORMAT), "meta": np.array(json.dumps(meta))}  # NaN metrics survive as NaN
        out.update({f"state/{k}": v for k, v in self.state.items()})
        if self.gradients is not None:
            out.update({f"gradients/{k}": v for k, v in self.gradients.arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Checkpoint:
        """The checkpoint :meth:`arrays` wrote; a CheckpointMismatch for another format."""
        if "format" not in arrays or int(arrays["format"]) != FORMAT:
            raise CheckpointMismatch(f"checkpoint format {arrays.get('format')} is not this gradpath's ({FORMAT})")
        meta = json.loads(str(arrays["meta"]))
        state = {k.removeprefix("state/"): np.asarray(arrays[k]) for k in arrays if k.startswith("state/")}
        grads = {k.removeprefix("gradients/"): arrays[k] for k in arrays if k.startswith("gradients/")}
        return cls(state=state, gradients=GradientRecord.from_arrays(grads) if grads else None, **meta)


def one_seed(arrays: Mapping[str, np.ndarray], i: int | None) -> dict[str, np.ndarray]:
    """Seed ``i``'s part of a multi-seed snapshot (all of a one-seed snapshot when ``i`` is None)."""
    if i is None:
        return {k: np.array(v) for k, v in arrays.items()}
    return {k: np.array(v if k in SHARED else v[i]) for k, v in arrays.items()}


def stack(per_seed: Sequence[Mapping[str, np.ndarray]], lanes: int | None) -> dict[str, np.ndarray]:
    """The multi-seed snapshot of ``per_seed`` snapshots (the one snapshot when ``lanes`` is None).

    Raises:
        CheckpointMismatch: the seeds disagree on a shared entry (they stopped at different steps).
    """
    if lanes is None:
        return dict(per_seed[0])
    out = {}
    for k, first in per_seed[0].items():
        if k in SHARED:
            if any(not np.array_equal(one[k], first) for one in per_seed):
                raise CheckpointMismatch(f"the seeds' checkpoints disagree on {k!r}; they cannot go on together")
            out[k] = np.array(first)
        else:
            out[k] = np.stack([one[k] for one in per_seed])
    return out


def check_fits(snapshot: Mapping[str, np.ndarray], fresh: Mapping[str, np.ndarray]) -> None:
    """Raise a CheckpointMismatch unless ``snapshot`` has the entries, shapes and dtypes of ``fresh``."""
    layout = {k: (np.shape(v), np.asarray(v).dtype.str) for k, v in fresh.items()}
    found = {k: (np.shape(v), np.asarray(v).dtype.str) for k, v in snapshot.items()}
    if layout != found:
        differ = sorted(k for k in layout.keys() | found.keys() if layout.get(k) != found.get(k))
        raise CheckpointMismatch(f"the checkpoint's state does not fit this run ({', '.join(differ)} differ)")


def flatten(state: Mapping[str, Any], to_numpy) -> dict[str, np.ndarray]:
    """A nested dict of framework arrays as ``{"params/W0": ..., "count": ...}`` numpy arrays."""
    out = {}
    for k, v in state.items():
        if isinstance(v, Mapping):
            out.update({f"{k}/{name}": a for name, a in flatten(v, to_numpy).items()})
        else:
            out[k] = to_numpy(v)
    return out


def unflatten(arrays: Mapping[str, np.ndarray], put) -> dict[str, Any]:
    """:func:`flatten` undone, each array turned back by ``put`` (which keeps its dtype)."""
    out: dict[str, Any] = {}
    for path, a in arrays.items():
        *parents, name = path.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = put(np.asarray(a))
    return out
