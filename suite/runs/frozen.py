"""Frozen annealed weights: run M1 (M3) with each loss term's weight fixed at the final lambda that
the M2 (M4) run of the same seed reached.

The annealed *partner* of a run is the run with the same problem, parameters, backend, seed,
network and every other setting, the method swapped M1 -> M2 or M3 -> M4, and the paper's initial
weights (ones). :func:`final_weights` reads the partner's last history row (``weight_<term>``,
the lambdas after its last step) from a store; :func:`frozen_spec` builds the run that holds those
numbers constant. The frozen run's config holds the explicit numbers (``loss_weights``), so its
key is reproducible: the same numbers given with ``--loss-weight`` name the same run.

A partner that is not complete in the store (missing, unfinished, diverged) cannot be frozen:
:class:`NotReady` says why, and ``gradpath run`` turns it into a usage error while a campaign lists
the run as waiting (:mod:`gradpath.suite.campaigns.definition`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gradpath.backends.settings import TrainSettings, applicable
from gradpath.problems.core import Problem
from gradpath.problems.errors import UsageError
from gradpath.suite.runs.record import HISTORY, config_hash, run_name
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.runs.store import Store, read_history

FROZEN = "frozen"  # the campaign value (loss_weights = ["frozen"]) that asks for frozen weights
ANNEALED_PARTNER = {"M1": "M2", "M3": "M4"}  # the method whose final lambdas a method may freeze


class NotReady(UsageError):
    """The annealed partner run is not complete in the store, so its final weights are unknown."""


def make_spec(problem_name: str, problem: Problem, backend: str, settings: Mapping[str, Any]) -> RunSpec:
    """The RunSpec of one run, its config and key computed as ``gradpath run`` and a campaign compute them.

    Raises:
        UsageError: an invalid setting.
    """
    resolved = TrainSettings(**settings).resolved(problem)
    config = {"problem": problem_name, "parameters": problem.parameters(), "backend": backend, "settings": resolved}
    return RunSpec(problem=problem_name, parameters=problem.parameters(), backend=backend, settings=dict(settings),
                   config=config, key=config_hash(config), name=run_name(config))


def partner_spec(problem_name: str, problem: Problem, backend: str, settings: Mapping[str, Any]) -> RunSpec:
    """The annealed run (M2 for M1, M4 for M3) whose final weights a run with ``settings`` freezes.

    ``settings`` are TrainSettings keyword arguments; annealing options in them (``weighting``,
    ``anneal_alpha``, ``anneal_every``) choose the partner's, and ``loss_weights`` is left out
    (the partner starts from ones).

    Raises:
        UsageError: the method does not take frozen weights (M2, M4 anneal their own).
    """
    method = settings.get("method", "M1")
    if method not in ANNEALED_PARTNER:
        raise UsageError(f"frozen loss weights apply to {', '.join(ANNEALED_PARTNER)} (the weights of the "
                         f"matching {', '.join(ANNEALED_PARTNER.values())} run); {method} anneals its own")
    partner = {k: v for k, v in settings.items() if k != "loss_weights"}
    partner["method"] = ANNEALED_PARTNER[method]
    return make_spec(problem_name, problem, backend, applicable(partner))


def final_weights(store: Store, spec: RunSpec) -> dict[str, float]:
    """The final loss weights (``weight_<term>`` of the last history row) of the annealed run ``spec``.

    Raises:
        NotReady: ``spec`` is not complete in ``store``, or its history lacks a finite positive weight.
    """
    state = store.state(spec)
    if state.status == "diverged":
        raise NotReady(f"the annealed run {spec.name} diverged in {store.root}: it has no final weights to freeze")
    if state.status != "complete":
        detail = f" ({state.reason})" if state.reason else ""
        raise NotReady(f"the annealed run {spec.name} is {state.status}{detail} in {store.root}, not complete; "
                       f"train it first (gradpath run {spec.problem} --method {spec.settings.get('method')} "
                       f"--out {store.root} with the same options), then freeze its weights")
    try:
        history = read_history(store.path(spec) / HISTORY)
    except (OSError, ValueError) as exc:
        raise NotReady(f"the history of {spec.name} cannot be read: {exc}") from None
    columns = [c for c in history.columns if c.startswith("weight_")]
    if not columns or not len(history):
        raise NotReady(f"the history of {spec.name} has no weight_<term> columns")
    last = history.iloc[-1]
    out = {c[len("weight_"):]: float(last[c]) for c in columns}
    bad = [f"{k}={v}" for k, v in out.items() if not (math.isfinite(v) and v > 0)]
    if bad:
        raise NotReady(f"the final weights of {spec.name} are not positive finite numbers: {', '.join(bad)}")
    return out


def frozen_settings(store: Store, problem_name: str, problem: Problem, backend: str,
                    settings: Mapping[str, Any]) -> tuple[dict[str, Any], RunSpec]:
    """``settings`` (of an M1 or M3 run) with ``loss_weights`` set to its annealed partner's final
    weights read from ``store``, and the partner's spec.

    Raises:
        UsageError: the method is M2 or M4.  NotReady: the partner is not complete in ``store``.
    """
    partner = partner_spec(problem_name, problem, backend, settings)
    weights = final_weights(store, partner)
    frozen = {k: v for k, v in applicable(dict(settings)).items() if k != "loss_weights"}
    frozen["loss_weights"] = {term: weights[term] for term in problem.term_names() if term in weights}
    return frozen, partner


def frozen_spec(store: Store, problem_name: str, problem: Problem, backend: str,
                settings: Mapping[str, Any]) -> RunSpec:
    """The M1 (M3) run of ``settings`` with its weights frozen at its annealed partner's final ones.

    Raises:
        UsageError: the method is M2 or M4.  NotReady: the partner is not complete in ``store``.
    """
    frozen, _ = frozen_settings(store, problem_name, problem, backend, settings)
    return make_spec(problem_name, problem, backend, frozen)
