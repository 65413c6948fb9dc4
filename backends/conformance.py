"""Conformance kit: plain checks a problem or backend plugin calls from its own pytest file.

Every check is a function that raises ``AssertionError`` with a readable message; none needs a
framework at import time (pytest and the frameworks are imported inside the checks that use
them). Parametrise them in your test file, e.g.::

    import pytest
    from gradpath.backends import conformance as kit
    from gradpath.problems import get_problem

    def test_my_problem():
        kit.check_problem(get_problem("my-problem"))

    @pytest.mark.parametrize("problem", kit.problem_names_for_conformance())
    @pytest.mark.parametrize("method", kit.methods_for_conformance("my-backend"))
    def test_my_backend_matches_jax(problem, method):
        kit.check_equivalence("my-backend", kit.small_problem(problem), method)

Problem checks: :func:`check_metadata`, :func:`check_sampling`, :func:`check_normalisation`,
:func:`check_exact_solution` (all four: :func:`check_problem`). Backend checks:
:func:`check_contract`, :func:`check_derivatives`, :func:`check_equivalence`,
:func:`check_loss_decreases`, :func:`check_deterministic`, :func:`check_resumes`,
:func:`check_weighting_golden` (all: :func:`check_backend`). A backend is checked on the methods it
declares (``Backend.methods``) only.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from gradpath.backends.data import draw_batches, seed_start, seed_streams
from gradpath.backends.losses import derivatives
from gradpath.backends.methods import METHODS
from gradpath.backends.settings import TrainSettings, applicable
from gradpath.backends.weighting import get_weighting
from gradpath.problems import get_problem, problem_class, problem_names, problem_sources
from gradpath.problems.core import Problem, parse_derivative

REFERENCE_BACKEND = "jax"
METHOD_NAMES = tuple(METHODS)

# -- golden values of the annealing rules (also used by tests/test_weighting.py) ------------------
# Gradients of a [2, 2, 1] net: residual term first, then one boundary term; current lambdas LAM.
WEIGHTING_GRADIENTS = (
    {"W0": [[1.0, -4.0], [2.0, 0.0]], "b0": [0.5, -1.0], "W1": [[3.0], [-1.0]], "b1": [6.0]},
    {"W0": [[0.5, -0.5], [1.0, 0.0]], "b0": [0.25, 0.25], "W1": [[2.0], [0.0]], "b1": [1.0]},
)
WEIGHTING_LAMBDAS = (1.0, 2.0)
# By hand:
#   max|grad_W L_r|              = 4                  (weights only)   max over all = 6 (b1)
#   layer means |grad_W L_b|     = W0: 2/4 = 0.5, W1: 2/2 = 1 -> mean of means 0.75
#   global mean |grad_W L_b|     = 4/6;  over all params: (4 + 0.5 + 2 + 1)/9 = 5.5/9
#   global mean |grad L_r| (all) = (7 + 1.5 + 4 + 6)/9 = 18.5/9
#   per-layer ratios (cavity)    = W0: (4 / (2 * 0.5)) = 4, W1: 3 / (2 * 1) = 1.5 -> 4
#   gradient norms (grad-norm)   = |g_r| = sqrt(68.25), |g_b| = sqrt(6.625); new lambda_i moves
#                                  towards mean(|g|) / |g_i|, EMA 0.9 on the old value
_NORM_R, _NORM_B = math.sqrt(68.25), math.sqrt(6.625)
WEIGHTING_GOLDEN: dict[str, tuple[float, float]] = {
    # code: lam_hat = 4 / (lam * 0.75) = 4 / 1.5; EMA 0.1 on the new value
    "code": (1.0, 0.9 * 2.0 + 0.1 * (4 / 1.5)),
    # paper: lam_hat = 6 / (5.5/9) over all parameters, unweighted; EMA 0.9 on the new value
    "paper": (1.0, 0.1 * 2.0 + 0.9 * (6 / (5.5 / 9))),
    # code-global: lam_hat = 6 / (lam * 5.5/9) over all parameters; EMA 0.1 on the new value
    "code-global": (1.0, 0.9 * 2.0 + 0.1 * (6 / (2.0 * 5.5 / 9))),
    # code-cavity: max over layers of the per-layer ratio = 4
    "code-cavity": (1.0, 0.9 * 2.0 + 0.1 * 4.0),
    # mean: (18.5/9) / (5.5/9)
    "mean": (1.0, 0.9 * 2.0 + 0.1 * (18.5 / 5.5)),
    "grad-norm": (0.9 * 1.0 + 0.1 * (_NORM_R + _NORM_B) / 2 / _NORM_R,
                  0.9 * 2.0 + 0.1 * (_NORM_R + _NORM_B) / 2 / _NORM_B),
}


def weighting_inputs(xp: Any = np) -> tuple[list[dict[str, Any]], Any]:
    """The golden gradients and lambdas as float64 arrays of namespace ``xp``."""
    grads = [{k: xp.asarray(np.asarray(v, np.float64)) for k, v in g.items()} for g in WEIGHTING_GRADIENTS]
    return grads, xp.asarray(np.asarray(WEIGHTING_LAMBDAS, np.float64))


def check_weighting_golden(xp: Any = np, names: Iterable[str] | None = None, rtol: float = 1e-12) -> None:
    """Every annealing variant, run with array namespace ``xp``, reproduces the hand-computed values.

    A backend passes the namespace its compiled step hands to ``Weighting.update`` (jax.numpy,
    ``array_api_compat.torch``, ...).
    """
    from gradpath.backends.weighting import get_weighting

    for name in names or WEIGHTING_GOLDEN:
        grads, lam = weighting_inputs(xp)
        new = np.asarray(get_weighting(name).update(xp, grads, lam), np.float64)
        np.testing.assert_allclose(new, WEIGHTING_GOLDEN[name], rtol=rtol, err_msg=f"weighting {name!r}")


# -- problems -------------------------------------------------------------------------------------
def problem_names_for_conformance() -> list[str]:
    """Every registered problem (built-in and plugins) that loads.

    A problem plugin that fails to load is left out with a warning naming it (a UserWarning), so
    that someone else's broken plugin does not fail a backend's tests; its own tests should call
    ``gradpath.problems.get_problem`` and see the error. A built-in that fails to load raises.
    """
    names = []
    for name in problem_names():
        if problem_sources()[name] != "builtin":
            try:
                problem_class(name)
            except Exception as exc:  # noqa: BLE001 - a broken plugin is named and skipped, whatever it raised
                warnings.warn(f"conformance: skipping {exc}", UserWarning, stacklevel=2)
                continue
        names.append(name)
    return names


def conformance_problem(preferred: str = "helmholtz") -> str:
    """The problem single-problem backend checks run on: ``preferred`` if it loads, else the first that does."""
    names = problem_names_for_conformance()
    return preferred if preferred in names else names[0]


def small_problem(name: str) -> Problem:
    """The problem ``name`` with defaults, except a coarse cavity reference (fast to compute)."""
    return get_problem(name, reference_n=32) if name == "cavity" else get_problem(name)


def check_metadata(problem: Problem) -> None:
    """Name, inputs, outputs, layers, test grid, reference and metrics are complete and consistent."""
    name = problem.name
    assert isinstance(name, str) and name, "problem.name must be a non-empty string"
    inputs, outputs = tuple(problem.inputs), tuple(problem.outputs)
    assert inputs and all(isinstance(c, str) and len(c) == 1 for c in inputs), \
        f"{name}: inputs must be one-letter names, got {inputs}"
    assert len(set(inputs)) == len(inputs), f"{name}: inputs must be unique, got {inputs}"
    assert outputs and len(set(outputs)) == len(outputs) and all("_" not in o for o in outputs), \
        f"{name}: outputs must be unique names without '_', got {outputs}"
    layers = tuple(problem.layers)
    assert len(layers) >= 3 and all(isinstance(n, int) and n > 0 for n in layers), \
        f"{name}: layers must be positive ints (inputs, hidden..., outputs), got {layers}"
    assert layers[0] == len(inputs) and layers[-1] == len(outputs), \
        f"{name}: layers {layers} must start with len(inputs)={len(inputs)} and end with len(outputs)={len(outputs)}"
    assert problem.domain.dim == len(inputs), f"{name}: domain has dim {problem.domain.dim}, inputs {inputs}"
    terms = problem.terms()
    assert terms and terms[0].name == "residual", f"{name}: the first term must be 'residual'"
    assert len(set(problem.term_names())) == len(terms), f"{name}: term names must be unique"
    for key in problem.solution_needs:
        parse_derivative(key, inputs, outputs)
    grid = problem.test_grid()
    n = problem.test_points_per_axis
    assert grid.shape == (n ** len(inputs), len(inputs)), f"{name}: test grid shape {grid.shape}"
    assert problem.domain.contains(grid).all(), f"{name}: test grid leaves the domain"
    ref = np.asarray(problem.reference(grid), np.float64)
    assert ref.shape[0] == grid.shape[0] and np.isfinite(ref).all(), f"{name}: reference not finite or mis-shaped"
    metrics = problem.metrics(ref, ref)
    assert problem.primary_metric in metrics, \
        f"{name}: metrics {sorted(metrics)} lack the primary metric {problem.primary_metric!r}"
    assert abs(metrics[problem.primary_metric]) < 1e-12, f"{name}: the reference has a non-zero error"
    off = problem.metrics(ref * 1.1 + 0.1, ref)
    assert all(np.isfinite(v) for v in off.values()) and off[problem.primary_metric] > 0, \
        f"{name}: metrics of a wrong prediction must be finite and positive, got {off}"
    from gradpath.backends.weighting import get_weighting
    get_weighting(problem.default_weighting)


def check_sampling(problem: Problem, seed: int = 0, steps: int = 3, batch_size: int = 64) -> None:
    """Batches stay in their regions and the domain, and one seed always draws the same points."""
    batches = draw_batches(problem, np.random.default_rng(seed), steps, batch_size, "float64")
    terms = problem.terms()
    assert len(batches) == len(terms), f"{problem.name}: one batch array per term expected"
    for term, b in zip(terms, batches):
        assert b.shape == (steps, len(term.regions), batch_size, len(problem.inputs)), \
            f"{problem.name} term {term.name!r}: batch shape {b.shape}"
        for r, region in enumerate(term.regions):
            assert region.contains(b[:, r]).all(), f"{problem.name} term {term.name!r}: points leave region {r}"
            assert problem.domain.contains(b[:, r]).all(), f"{problem.name} term {term.name!r}: points leave the domain"
    again = draw_batches(problem, np.random.default_rng(seed), steps, batch_size, "float64")
    assert all(np.array_equal(a, b) for a, b in zip(batches, again)), f"{problem.name}: sampling not deterministic"
    other = draw_batches(problem, np.random.default_rng(seed + 1), steps, batch_size, "float64")
    assert not np.array_equal(batches[0], other[0]), f"{problem.name}: the seed does not change the batches"


def check_normalisation(problem: Problem, seed: int = 0) -> None:
    """Input mean and standard deviation are finite, of shape (d,), with sigma > 0, and seeded."""
    mu, sigma = problem.normalisation(seed_streams(seed)["normalisation"])
    d = len(problem.inputs)
    assert np.shape(mu) == (d,) and np.shape(sigma) == (d,), f"{problem.name}: mu/sigma must have shape ({d},)"
    assert np.isfinite(mu).all() and np.isfinite(sigma).all() and (sigma > 0).all(), \
        f"{problem.name}: normalisation mu={mu}, sigma={sigma}"
    mu2, sigma2 = problem.normalisation(seed_streams(seed)["normalisation"])
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2), f"{problem.name}: normalisation not seeded"


@lru_cache(maxsize=None)
def _stencil(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Central finite-difference offsets and weights for the ``order``-th derivative (accuracy >= 6)."""
    m = order // 2 + 3
    offsets = np.arange(-m, m + 1, dtype=np.float64)
    vander = np.vander(offsets, increasing=True).T  # row p: offsets**p
    rhs = np.zeros(len(offsets))
    rhs[order] = math.factorial(order)
    return offsets, np.linalg.solve(vander, rhs)


def finite_difference(problem: Problem, x: np.ndarray, keys: Sequence[str], h: float | None = None) -> dict[str, np.ndarray]:
    """Derivative keys of ``problem.exact`` at ``x`` by tensor-product central differences (float64 numpy)."""
    extent = max(max(h_ - l_ for l_, h_ in zip(problem.domain.lo, problem.domain.hi)), 1e-3)
    out = {}
    for key in keys:
        column, index = parse_derivative(key, problem.inputs, problem.outputs)
        output = problem.outputs[column]
        counts = {i: index.count(i) for i in set(index)}
        step = h if h is not None else extent * (2e-3 if len(index) <= 2 else 1e-2)
        total = np.zeros(len(x))
        grids = [(axis, *_stencil(k)) for axis, k in counts.items()]
        combos: list[tuple[np.ndarray, float]] = [(np.zeros(x.shape[1]), 1.0)]
        for axis, offs, weights in grids:
            combos = [(shift + np.eye(x.shape[1])[axis] * o * step, w * wt / step ** counts[axis])
                      for shift, w in combos for o, wt in zip(offs, weights) if wt != 0.0]
        for shift, w in combos:
            total = total + w * np.asarray(problem.exact(np, x + shift)[output], np.float64)
        out[key] = total
    return out


def check_exact_solution(problem: Problem, seed: int = 0, batch_size: int = 64, rtol: float = 1e-6) -> None:
    """Every term's misfit vanishes on the exact solution (skipped without ``problem.exact``).

    Derivatives come from finite differences of ``problem.exact`` (see :func:`finite_difference`);
    the tolerance is relative to the largest magnitude among the derivatives and the misfit with
    every derivative set to zero (the forcing).
    """
    probe = problem.exact(np, problem.domain.sample(np.random.default_rng(seed), (2,)))
    if probe is None:
        return
    assert set(probe) == set(problem.outputs), f"{problem.name}: exact() returns {sorted(probe)}, outputs {problem.outputs}"
    batches = draw_batches(problem, np.random.default_rng(seed), 1, batch_size, "float64")
    for term, b in zip(problem.terms(), batches):
        for r in range(len(term.regions)):
            x = b[0, r]
            d = finite_difference(problem, x, term.needs)
            misfit = term.misfit(np, x, d)
            zero = term.misfit(np, x, {k: np.zeros(len(x)) for k in term.needs})
            parts = misfit if isinstance(misfit, tuple) else (misfit,)
            forcing = zero if isinstance(zero, tuple) else (zero,)
            scale = max([1.0] + [float(np.abs(v).max()) for v in (*d.values(), *forcing)])
            worst = max(float(np.abs(p).max()) for p in parts)
            assert worst <= rtol * scale, (f"{problem.name} term {term.name!r} region {r}: the exact solution "
                                           f"leaves a misfit {worst:.3g} (scale {scale:.3g})")


def check_problem(problem: Problem) -> None:
    """All problem checks: metadata, sampling, normalisation, exact solution."""
    check_metadata(problem)
    check_sampling(problem)
    check_normalisation(problem)
    check_exact_solution(problem)


# -- backends -------------------------------------------------------------------------------------
METHOD_PREFERENCE = ("M4", "M2", "M3", "M1")  # single-method checks take the first declared: annealing and gates
TRAINER_MEMBERS = ("init", "warmup", "train", "predict", "gradients", "export", "snapshot", "restore", "sync")


def methods_for_conformance(backend: str) -> tuple[str, ...]:
    """The methods ``backend`` declares (``Backend.methods``; all of M1-M4 when it declares none)."""
    from gradpath.backends import supported_methods
    return supported_methods(backend)


def check_contract(backend: str, problem: Problem | None = None) -> None:
    """The backend and a trainer it builds have every member gradpath.backends.protocol requires.

    ``supports_lanes`` is a bool, ``methods`` (if declared) names known methods, ``hessian_matmat``
    (if present) is callable, ``device_name`` and ``versions`` answer for the CPU, and the trainer has ``snapshot``/``restore`` (checkpoints need them)
    and ``train(state, batches)``.
    """
    from gradpath.backends import get_backend

    b = get_backend(backend)
    assert getattr(b, "name", None) == backend, f"{backend}: Backend.name is {getattr(b, 'name', None)!r}"
    assert isinstance(getattr(b, "supports_lanes", None), bool), \
        f"{backend}: Backend.supports_lanes must be declared, True or False"
    declared = getattr(b, "methods", tuple(METHODS))
    assert declared and set(declared) <= set(METHODS), \
        f"{backend}: Backend.methods {declared!r} must be a non-empty tuple of {', '.join(METHODS)}"
    hook = getattr(b, "hessian_matmat", None)
    assert hook is None or callable(hook), f"{backend}: Backend.hessian_matmat must be callable"
    # every run's manifest calls these two, so a backend without them would fail at its first run
    lacking = [m for m in ("resolve_device", "device_name", "versions", "trainer") if not callable(getattr(b, m, None))]
    assert not lacking, f"{backend}: Backend lacks {', '.join(lacking)} (required by gradpath.backends.protocol.Backend)"
    assert isinstance(b.device_name(b.resolve_device("cpu")), str), f"{backend}: Backend.device_name must return a str"
    assert isinstance(b.versions(), dict), f"{backend}: Backend.versions must return a dict of package versions"
    problem = problem or small_problem(conformance_problem())
    method = next(m for m in METHOD_PREFERENCE if m in declared)
    trainer = b.trainer(problem, small_settings(method), b.resolve_device("cpu"))
    missing = [m for m in TRAINER_MEMBERS if not callable(getattr(trainer, m, None))]
    assert not missing, (f"{backend}: its trainer lacks {', '.join(missing)} (required by "
                         "gradpath.backends.protocol.Trainer; without snapshot/restore no run can be checkpointed)")
    try:
        inspect.signature(trainer.train).bind(None, None)
    except TypeError:
        raise AssertionError(f"{backend}: Trainer.train must take (state, batches), "
                             f"got {inspect.signature(trainer.train)}") from None


def small_settings(method: str = "M1", steps: int = 20, **overrides: Any) -> TrainSettings:
    """Float64 settings with a tiny network and eager torch, for fast checks."""
    values = dict(method=method, width=8, depth=2, steps=steps, log_every=steps, batch_size=32,
                  anneal_every=5, dtype="float64", device="cpu", seed=1, compile=False)
    values.update(overrides)
    if values.get("weighting") and get_weighting(values["weighting"]).every is not None:
        values.pop("anneal_every")  # a rule with its own interval (relobralo) refuses another one
    return TrainSettings(**applicable(values))  # anneal_every=5 where the method anneals


def _replay(backend: str, problem: Problem, settings: TrainSettings):
    from gradpath.backends.replay import replay
    return replay(backend, problem, settings, steps=settings.steps)


@lru_cache(maxsize=64)
def _reference_replay(backend: str, problem: Problem, settings: TrainSettings):
    return _replay(backend, problem, settings)


def check_derivatives(backend: str, problem: Problem, method: str = "M1", rtol: float = 1e-10) -> None:
    """``trainer.predict`` on a tiny net equals the framework-free jets (gradpath.backends.jets in numpy).

    tests/test_jets.py validates the numpy jets against closed-form derivatives.
    """
    from gradpath.backends import get_backend

    settings = small_settings(method)
    b = get_backend(backend)
    trainer = b.trainer(problem, settings, b.resolve_device("cpu"))
    start = seed_start(problem, settings)
    params, mu, sigma = start.params, start.mu, start.sigma
    keys = tuple(dict.fromkeys([k for t in problem.terms() for k in t.needs] + list(problem.solution_needs)))
    x = problem.domain.sample(np.random.default_rng(3), (50,))
    got = trainer.predict(trainer.init(params, mu, sigma), x, keys)
    want = derivatives(np, problem, params, x, mu, sigma, keys, net=settings.method_spec.net, gate=settings.gate)
    for k in keys:
        scale = max(float(np.abs(want[k]).max()), 1e-300)
        diff = float(np.abs(np.asarray(got[k], np.float64) - want[k]).max())
        assert diff <= rtol * scale, f"{backend} {problem.name} {method}: {k} differs by {diff:.3g} (scale {scale:.3g})"


def check_equivalence(backend: str, problem: Problem, method: str, reference: str = REFERENCE_BACKEND,
                      steps: int = 20, rtol: float = 1e-9, **overrides: Any) -> None:
    """The first ``steps`` float64 steps match the reference backend (losses, lambdas, gradients, params)."""
    settings = small_settings(method, steps, **overrides)
    diff = _replay(backend, problem, settings).max_relative_difference(_reference_replay(reference, problem, settings))
    assert max(diff.values()) <= rtol, f"{backend} vs {reference}, {problem.name} {method}: {diff}"


def check_loss_decreases(backend: str, problem: Problem, method: str = "M1", steps: int = 200) -> None:
    """The summed loss after ``steps`` steps is below the first step's."""
    out = _replay(backend, problem, small_settings(method, steps, lr=1e-2, lr_decay_rate=1.0))
    first, last = float(out.losses[0].sum()), float(out.final_losses.sum())
    assert np.isfinite(last) and last < first, f"{backend} {problem.name} {method}: loss {first:.4g} -> {last:.4g}"


def check_deterministic(backend: str, problem: Problem, method: str = "M4", steps: int = 20) -> None:
    """The same seed gives bit-identical losses, lambdas, gradients and parameters twice."""
    settings = small_settings(method, steps)
    diff = _replay(backend, problem, settings).max_relative_difference(_replay(backend, problem, settings))
    assert max(diff.values()) == 0.0, f"{backend} {problem.name} {method}: two identical runs differ: {diff}"


class _Stop(Exception):
    """Raised from a checkpoint callback: the process 'dies' right after a checkpoint."""


def checkpoints_at(backend: str, problem: Problem, settings: Sequence[TrainSettings], step: int,
                   gradient_every: int = 0) -> list[Any]:
    """Train ``settings`` (seeds trained together) and stop right after the checkpoint at ``step``.

    Returns one :class:`gradpath.backends.checkpoint.Checkpoint` per seed, each taken through its file
    format (``arrays`` and back), as a resumed process reads it.
    """
    from gradpath.backends.checkpoint import Checkpoint
    from gradpath.backends.training import train_seeds

    kept: dict[int, Checkpoint] = {}

    def on_checkpoint(i: int, checkpoint: Checkpoint) -> None:
        kept[i] = Checkpoint.from_arrays(checkpoint.arrays())
        if i == len(settings) - 1 and checkpoint.step == step:
            raise _Stop

    try:
        train_seeds(problem, settings, backend, on_checkpoint=on_checkpoint, checkpoint_every=0,
                    gradient_every=gradient_every)
    except _Stop:
        return [kept[i] for i in range(len(settings))]
    raise AssertionError(f"{backend}: no checkpoint at step {step} (is it not the end of a chunk?)")


def check_resumes(backend: str, problem: Problem, method: str = "M4", seeds: Sequence[int] = (1,), steps: int = 20,
                  gradient_every: int = 10, **overrides: Any) -> None:
    """A run stopped part-way and resumed from its checkpoint equals the uninterrupted run bit for bit.

    History (timings apart), final parameters, loss weights and gradient records are compared
    exactly, for ``seeds`` trained together (several: the backend's lanes), logged every
    ``0.3 * steps`` (so the last chunk is a short one) and stopped after the second chunk
    (:func:`checkpoints_at`). First the trainer must have ``snapshot``/``restore``
    (:func:`check_contract`), and ``restore(snapshot(state))`` must give back every array exactly.
    """
    from gradpath.backends import get_backend
    from gradpath.backends.training import train_seeds

    check_contract(backend, problem)
    b = get_backend(backend)
    one = small_settings(method, steps, seed=seeds[0], **overrides)
    trainer = b.trainer(problem, one, b.resolve_device("cpu"))
    start = seed_start(problem, one)
    snap = trainer.snapshot(trainer.init(start.params, start.mu, start.sigma))
    again = trainer.snapshot(trainer.restore(snap))
    assert snap.keys() == again.keys() and all(
        snap[k].dtype == again[k].dtype and np.array_equal(snap[k], again[k]) for k in snap), \
        f"{backend}: Trainer.restore(snapshot(state)) does not give the same arrays back"
    log_every = max(1, steps * 3 // 10)
    settings = [small_settings(method, steps, log_every=log_every, seed=s, **overrides) for s in seeds]
    whole = train_seeds(problem, settings, backend, gradient_every=gradient_every)
    checkpoints = checkpoints_at(backend, problem, settings, 2 * log_every, gradient_every)
    resumed = train_seeds(problem, settings, backend, gradient_every=gradient_every, resume=checkpoints)
    where = f"{backend} {problem.name} {method} seeds {list(seeds)}"
    for a, b in zip(whole, resumed):
        assert b.summary["resumed_at_steps"] == [2 * log_every], f"{where}: {b.summary['resumed_at_steps']}"
        assert len(a.history) == len(b.history), f"{where}: {len(a.history)} rows, resumed {len(b.history)}"
        for ra, rb in zip(a.history, b.history):
            differ = [k for k in ra if k != "seconds" and ra[k] != rb.get(k) and not (ra[k] != ra[k] and rb[k] != rb[k])]
            assert not differ, f"{where}: resumed run differs at step {ra['step']} in {differ}"
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k]), f"{where}: resumed run ends with another {k}"
        if a.gradients is not None:
            assert a.gradients.steps == b.gradients.steps and all(
                np.array_equal(x, y) for x, y in zip(a.gradients.counts, b.gradients.counts)), \
                f"{where}: resumed run's gradient records differ"


def check_backend(name: str, problem_names: Iterable[str] | None = None, methods: Iterable[str] | None = None,
                  reference: str = REFERENCE_BACKEND, xp: Any = None, problem: str | None = None) -> None:
    """Every backend check in one call (for a quick script; parametrise the parts in pytest).

    Args:
        problem_names: the problems of the derivative and equivalence checks (default: every one that loads).
        methods: the methods to check (default: all); only those the backend declares are checked.
        problem: the one problem of the single-problem checks (loss decrease, determinism, resume):
            by default helmholtz, or the first problem that loads (:func:`conformance_problem`).
        xp: the array namespace the backend passes to the annealing rules, for the golden check.
    """
    declared = methods_for_conformance(name)
    methods = [m for m in (methods or METHOD_NAMES) if m in declared]
    assert methods, f"{name}: none of the methods asked for is among those it declares: {declared}"
    first = next(m for m in METHOD_PREFERENCE if m in methods)
    single = small_problem(problem or conformance_problem())
    check_contract(name, single)
    for pname in list(problem_names or problem_names_for_conformance()):
        one = small_problem(pname)
        for net in dict.fromkeys(METHODS[m].net for m in methods):  # each network form declared, once
            check_derivatives(name, one, next(m for m in methods if METHODS[m].net == net))
        for method in methods:
            check_equivalence(name, one, method, reference)
    check_loss_decreases(name, single, "M1" if "M1" in methods else first)
    check_deterministic(name, single, first)
    check_resumes(name, single, first)
    if xp is not None:
        check_weighting_golden(xp)


__all__ = [n for n in dir() if n.startswith("check_")] + [
    "WEIGHTING_GOLDEN", "WEIGHTING_GRADIENTS", "WEIGHTING_LAMBDAS", "checkpoints_at", "finite_difference",
    "conformance_problem", "methods_for_conformance", "problem_names_for_conformance",
    "small_problem", "small_settings", "weighting_inputs"]
