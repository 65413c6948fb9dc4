"""gradpath as the commit under test has it, for the asv suite.

asv installs one commit at a time and runs this folder from the working tree, so a benchmark must
time the old code as well as the new: since 33388df the layers install as ``gradpath.problems``,
``gradpath.backends``, ``gradpath.suite``, before it as top-level ``problems``, ``backends``, ``suite``;
``Trainer.train`` took the first step's index until the step count moved into the state; and
features (seeds trained as lanes, ...) arrived over time. What a benchmark needs and an older
commit did inline (``seed_start``, ``initial_arrays``) is done here as that commit did it;
otherwise everything here raises NotImplementedError, which asv reports as a skip, where the
commit lacks what a benchmark needs.

The timing procedure itself is the working tree's ``suite/perf/timing.py`` (gradpath.suite.perf.timing,
the one ``gradpath bench`` uses), loaded from its file, so that every commit is timed the same way.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

TIMING_FILE = Path(__file__).resolve().parents[1] / "suite" / "perf" / "timing.py"
TIMEOUT = 600  # seconds; a cold torch compile of M4 takes about a minute on 2 cores
SEED = 0


def module(name: str) -> ModuleType:
    """``gradpath.<name>``, else the top-level ``<name>`` of commits before the namespace;
    NotImplementedError if the commit has neither."""
    for candidate in (f"gradpath.{name}", name):
        try:
            return importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            # only the module itself (or a package above it) missing means "not in this commit";
            # a missing third-party import inside it is a real error
            if exc.name is None or not candidate.startswith(exc.name):
                raise
    raise NotImplementedError(f"this commit has no module {name}")


def feature(name: str, attr: str) -> Any:
    """``attr`` of :func:`module` ``(name)``; NotImplementedError if this commit lacks it."""
    found = getattr(module(name), attr, None)
    if found is None:
        raise NotImplementedError(f"this commit has no {name}.{attr}")
    return found


@functools.cache
def timing() -> ModuleType:
    """The working tree's gradpath.suite.perf.timing, whatever commit is installed."""
    spec = importlib.util.spec_from_file_location("_gradpath_asv_timing", TIMING_FILE)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded  # dataclasses look their module up while the file executes
    spec.loader.exec_module(loaded)
    return loaded


def _seed_start_before_10b8363(problem: Any, settings: Any) -> SimpleNamespace:
    """A seed's start as commits before ``backends.data.seed_start`` (10b8363) drew it inline
    (the same three streams: initial weights, normalisation, batches)."""
    streams = feature("backends.data", "seed_streams")(settings.seed)
    params = feature("backends.init", "init_params")(settings.layers_for(problem), settings.method_spec.net,
                                                      streams["init"])
    mu, sigma = problem.normalisation(streams["normalisation"])
    return SimpleNamespace(params=params, mu=mu, sigma=sigma, batches=streams["batches"])


def _initial_arrays_before_10b8363(starts: list, lanes: int | None) -> tuple:
    """``(params, mu, sigma)`` for ``Trainer.init`` as train_seeds stacked them inline before
    ``backends.data.initial_arrays`` (10b8363): each array along a new leading seed axis."""
    import numpy as np

    if lanes is None:
        return starts[0].params, starts[0].mu, starts[0].sigma
    return ({k: np.stack([s.params[k] for s in starts]) for k in starts[0].params},
            np.stack([s.mu for s in starts]), np.stack([s.sigma for s in starts]))


@functools.cache
def _takes_first_step(trainer_type: type) -> bool:
    """Whether this trainer's ``train`` takes the first step's index (the contract before it moved into the state)."""
    return len(inspect.signature(trainer_type.train).parameters) >= 4  # self, state, batches, first_step


def _train_chunk(trainer: Any, state: Any, batches: list, first_step: int) -> tuple[Any, Any]:
    if _takes_first_step(type(trainer)):
        return trainer.train(state, batches, first_step)
    return trainer.train(state, batches)


def api() -> Any:
    """timing.Api over this commit's gradpath."""
    data = module("backends.data")
    seed_start = getattr(data, "seed_start", None) or _seed_start_before_10b8363
    return timing().Api(get_backend=feature("backends", "get_backend"), get_problem=feature("problems", "get_problem"),
                        settings=feature("backends.settings", "TrainSettings"), seed_start=seed_start,
                        draw_batches=feature("backends.data", "draw_batches"), train_chunk=_train_chunk,
                        initial_arrays=getattr(data, "initial_arrays", None) or _initial_arrays_before_10b8363)


def backend_for(target: str, *, lanes: bool = False) -> tuple[Any, str]:
    """The backend and resolved device of ``"framework:device"``; NotImplementedError (asv's skip) if
    the framework or device is absent, or (``lanes``) if this commit's backend cannot train seeds as lanes."""
    name, device = target.split(":")
    usage_error = feature("problems.errors", "UsageError")
    try:
        impl = feature("backends", "get_backend")(name)
        resolved = impl.resolve_device(device)
    except usage_error as exc:
        raise NotImplementedError(str(exc)) from None
    if lanes and not getattr(impl, "supports_lanes", False):
        raise NotImplementedError(f"{name} in this commit trains no seeds as lanes")
    return impl, resolved


def prepare(problem: str, method: str, target: str, *, chunk: int, lanes: int | None = None) -> Any:
    """timing.prepare for ``"framework:device"``: the paper's settings, seed 0, the step compiled."""
    backend_for(target, lanes=lanes is not None)
    name, device = target.split(":")
    return timing().prepare(problem, method, name, device, chunk=chunk, lanes=lanes, seed=SEED, api=api())
