"""What a seed fixes, drawn with numpy identically for every backend: the initial weights, the
input normalisation and the training points."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from gradpath.backends.init import init_params
from gradpath.backends.settings import TrainSettings
from gradpath.problems.core import Problem


def seed_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators for the initial weights, the input normalisation and the batches."""
    init, norm, data = np.random.SeedSequence(seed).spawn(3)
    return {"init": np.random.default_rng(init), "normalisation": np.random.default_rng(norm),
            "batches": np.random.default_rng(data)}


@dataclass
class SeedStart:
    """A seed's run before its first step.

    Attributes:
        params: initial parameters by name (float64, :func:`gradpath.backends.init.init_params`).
        mu, sigma: input normalisation, from the seed's own residual points.
        batches: the seed's batch stream, fresh (nothing drawn from it yet): :func:`draw_batches` draws from it.
    """

    params: dict[str, np.ndarray]
    mu: np.ndarray
    sigma: np.ndarray
    batches: np.random.Generator


def seed_start(problem: Problem, settings: TrainSettings) -> SeedStart:
    """The initial weights, normalisation and batch stream of ``settings.seed`` for ``problem``.

    Every entry point that trains (runs, benchmarks, replays, diagnostics) starts a seed here, so
    that one seed means one start whatever trains it.
    """
    streams = seed_streams(settings.seed)
    params = init_params(settings.layers_for(problem), settings.method_spec.net, streams["init"])
    mu, sigma = problem.normalisation(streams["normalisation"])
    return SeedStart(params, mu, sigma, streams["batches"])


def seed_normalisation(problem: Problem, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The input mean and standard deviation that ``seed`` gives ``problem`` (as :func:`seed_start`),
    for a run whose saved parameters predate storing them."""
    return problem.normalisation(seed_streams(seed)["normalisation"])


def initial_arrays(starts: list[SeedStart], lanes: int | None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``(params, mu, sigma)`` as ``Trainer.init`` takes them: the one seed's own (``lanes`` None),
    or every array stacked along a new leading seed axis (a trainer built with ``lanes=len(starts)``)."""
    if lanes is None:
        if len(starts) != 1:
            raise ValueError(f"{len(starts)} seeds need a trainer with lanes={len(starts)}; lanes=None takes one seed")
        return starts[0].params, starts[0].mu, starts[0].sigma
    if len(starts) != lanes:
        raise ValueError(f"{len(starts)} seeds for a trainer with lanes={lanes}; give one seed per lane")
    params = {k: np.stack([s.params[k] for s in starts]) for k in starts[0].params}
    return params, np.stack([s.mu for s in starts]), np.stack([s.sigma for s in starts])


def draw_batches(problem: Problem, rng: np.random.Generator, steps: int, batch_size: int,
                 dtype: str) -> list[np.ndarray]:
    """Fresh points for ``steps`` steps: one ``(steps, n_regions, batch_size, d)`` array per term.

    Each step consumes one row of uniforms, split over the terms and regions in the problem's
    order. numpy fills ``rng.random((steps, n))`` row by row, so the batches of step s do not
    depend on how many steps are drawn at a time (the log interval), only on the seed.
    """
    terms = problem.terms()
    dim = len(problem.inputs)
    per_step = sum(len(t.regions) for t in terms) * batch_size * dim
    u = rng.random((steps, per_step))
    out, offset = [], 0
    for term in terms:
        regions = []
        for region in term.regions:
            block = u[:, offset:offset + batch_size * dim].reshape(steps, batch_size, dim)
            regions.append(region.from_unit(block))
            offset += batch_size * dim
        out.append(np.stack(regions, axis=1).astype(dtype))
    return out


# The Bernoulli lookback of ReLoBRaLo (gradpath.backends.weighting): a counter-based stream, so that
# the draw of step t is a function of (key, t) alone. A resumed run needs no generator state for
# it, every backend is fed the same draws as a batch input, and the batch stream is not touched
# (runs of the other rules keep their batches). The mixing is SplitMix64 (Steele, Lea & Flood,
# "Fast splittable pseudorandom number generators", OOPSLA 2014): state_t = key + (t + 1) * gamma,
# output = its finaliser.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(30), np.uint64(0xBF58476D1CE4E5B9), np.uint64(27), np.uint64(0x94D049BB133111EB), np.uint64(31))


def lookback_key(params: dict[str, np.ndarray]) -> np.ndarray:
    """The lookback stream's key, int32 ``(2,)``, from a seed's initial parameters.

    A trainer is given the seed's initial arrays (:func:`initial_arrays`), not the seed: the initial
    weights are the seed's own (its ``init`` stream), so hashing them gives each seed its own key,
    the same in every backend and whether the seed trains alone or beside others.
    """
    digest = hashlib.sha256()
    for k in sorted(params):
        digest.update(k.encode())
        digest.update(np.ascontiguousarray(np.asarray(params[k], np.float64)).tobytes())
    entropy = int.from_bytes(digest.digest()[:16], "little")
    return np.random.SeedSequence(entropy).generate_state(2, np.uint32).view(np.int32)


def lookback_draws(key: np.ndarray, first: int, steps: int, expectation: float) -> np.ndarray:
    """Bernoulli(``expectation``) draws, float64 0/1, of steps ``first .. first + steps - 1``.

    ``key`` is int32 ``(..., 2)`` (:func:`lookback_key`, or one per seed); the result is ``(..., steps)``.
    """
    state = np.ascontiguousarray(np.asarray(key, np.int32)).view(np.uint32).view(np.uint64)  # (..., 1)
    t = np.arange(first, first + steps, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2**64, as SplitMix64 wants
        z = state + t * _GAMMA
        z = (z ^ (z >> _MIX[0])) * _MIX[1]
        z = (z ^ (z >> _MIX[2])) * _MIX[3]
        z = z ^ (z >> _MIX[4])
    uniform = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53  # 53 random bits in [0, 1)
    return (uniform < expectation).astype(np.float64)
