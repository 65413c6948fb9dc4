"""Campaigns: the cartesian product of run options, read from a TOML file or a named preset.

A campaign file is data (read with tomllib, never executed)::

    name = "table3"
    description = "Klein-Gordon, Table 3"          # optional
    [grid]                                         # or several [[grid]] tables: their union
    problem = ["klein-gordon"]
    method = ["M1", "M2", "M3", "M4"]
    backend = ["jax"]                              # optional, default ["jax"]
    seed = [0, 1, 2]
    architecture = [[50, 5]]                       # optional (width, depth) pairs
    # any TrainSettings field (steps = [1000, 5000]) or problem parameter (form = ["psi-p", "u-v-p"])
    loss_weights = [{}, {boundary = 10.0}, "frozen"] # optional: constant (M1/M3) or initial (M2/M4) weights
    [settings]                                     # fixed TrainSettings overrides
    steps = 40001
    [parameters.helmholtz]                         # fixed problem parameters, per problem
    a2 = 4

A problem-parameter axis applies to the problems of its grid that have that parameter; the
others get one run per combination of the remaining axes. ``loss_weights`` values are tables
{term = weight} or ``"frozen"``: an M1 (M3) run then holds each weight at the final lambda of its
M2 (M4) partner (:mod:`gradpath.suite.runs.frozen`), read from the campaign's store when the
campaign is planned (:func:`plan`); until that partner is complete the run *waits* (listed, not
trained). For M2/M4, ``"frozen"`` means the paper's initial weights (ones). Each run is a :class:`RunSpec` whose
``key`` is :func:`gradpath.suite.runs.record.config_hash` of its resolved configuration, exactly as
``gradpath run`` computes it, so both find the same record.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradpath.backends import BUILTIN as BUILTIN_BACKENDS
from gradpath.backends import backend_status
from gradpath.backends.settings import TrainSettings, applicable, canonical_loss_weights
from gradpath.problems import get_problem, problem_class
from gradpath.problems.errors import UsageError, unknown_choice
from gradpath.suite.runs.frozen import (ANNEALED_PARTNER, FROZEN, NotReady, frozen_settings, make_spec,
                                       partner_spec)
from gradpath.suite.runs.record import config_hash, run_name
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.runs.store import Store

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = ("name", "description", "grid", "settings", "parameters")
AXES = ("problem", "backend", "architecture")  # grid keys that are not TrainSettings fields
SETTING_FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}
_HINTS = typing.get_type_hints(TrainSettings)


@dataclass(frozen=True)
class Campaign:
    """A parsed campaign: its grids (each a product of axes), fixed settings and parameters."""

    name: str
    grids: tuple[dict[str, list[Any]], ...]
    settings: dict[str, Any]
    parameters: dict[str, dict[str, Any]]
    description: str = ""
    source: str = ""


def _fail(source: str, message: str | Exception) -> UsageError:
    return UsageError(f"{source}: {message}")


@dataclass(frozen=True)
class Waiting:
    """A frozen-weights run (``loss_weights = "frozen"``) whose annealed partner is not complete in the store.

    Attributes:
        name: the run, as ``<problem>-<method>-<backend>-s<seed>`` (its key needs the partner's weights).
        partner: the M2/M4 run whose final weights it waits for.  reason: why they cannot be read yet.
    """

    name: str
    partner: RunSpec
    reason: str


@dataclass(frozen=True)
class Plan:
    """A campaign's runs: ``specs`` (each with its key) and the frozen-weights runs still ``waiting``."""

    specs: list[RunSpec]
    waiting: list[Waiting]


def _coerce_loss_weights(value: Any) -> Any:
    """A loss_weights value: a table {term = weight} as a plain dict of floats, or ``"frozen"``."""
    if value == FROZEN:
        return FROZEN
    if not isinstance(value, Mapping):
        raise UsageError(f"setting 'loss_weights' must be a table {{term = weight}} or \"{FROZEN}\", got {value!r}")
    return dict(canonical_loss_weights(value))


def _coerce_setting(name: str, value: Any) -> Any:
    """``value`` as the type of TrainSettings field ``name`` (an int where a float goes becomes a float)."""
    if name == "loss_weights":
        return _coerce_loss_weights(value)
    kinds = set(typing.get_args(_HINTS[name])) or {_HINTS[name]}
    kinds.discard(type(None))
    ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool), str: isinstance(value, str)}
    for kind in (bool, int, float, str):
        if kind in kinds and ok[kind]:
            return float(value) if kind is float else value
    names = " or ".join(sorted(k.__name__ for k in kinds))
    raise UsageError(f"setting {name!r} must be {names}, got {value!r}")


def _table(source: str, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(source, f"{where} must be a table, got {value!r}")
    return dict(value)


def parse_campaign(data: Mapping[str, Any], source: str, default_name: str = "campaign") -> Campaign:
    """Check the structure of campaign data (a TOML document or a preset) and build a Campaign.

    Raises:
        UsageError: an unknown key (with a close match), a wrong type, an empty axis, a clash.
    """
    for key in data:
        if key not in TOP_KEYS:
            raise _fail(source, unknown_choice("campaign key", key, TOP_KEYS))
    if "grid" not in data:
        raise _fail(source, "no [grid] table; a campaign needs at least: [grid] problem = [...]")
    raw_grids = data["grid"] if isinstance(data["grid"], list) else [data["grid"]]
    if not raw_grids:
        raise _fail(source, "the campaign has no runs: [[grid]] is empty")
    settings = {k: _coerce(source, k, v) for k, v in _table(source, "[settings]", data.get("settings", {})).items()}
    for key in settings:
        if key not in SETTING_FIELDS:
            raise _fail(source, unknown_choice("setting", key, SETTING_FIELDS))
    parameters = {}
    for problem, params in _table(source, "[parameters]", data.get("parameters", {})).items():
        fields = _problem_fields(source, problem)
        parameters[problem] = _table(source, f"[parameters.{problem}]", params)
        for key in parameters[problem]:
            if key not in fields:
                raise _fail(source, unknown_choice(f"parameter of {problem}", key, fields))
    grids = tuple(_parse_grid(source, i, _table(source, "[grid]", g), settings) for i, g in enumerate(raw_grids))
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise _fail(source, f"name must be a non-empty string, got {name!r}")
    try:
        check_name(name, "campaign name" if "name" in data else
                   "campaign name (the file's name; set name = \"...\" in it)")
    except UsageError as exc:
        raise _fail(source, exc) from None
    return Campaign(name=name, grids=grids, settings=settings, parameters=parameters,
                    description=str(data.get("description", "")), source=source)


NAME_RULE = "1 to 100 ASCII letters, digits, '-', '_' and '.', not starting with '.'"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_name(name: str, what: str = "campaign name") -> str:
    """``name`` if it is safe as one directory name (``results/<name>/``): 1 to 100 ASCII letters,
    digits, '-', '_' and '.', not starting with '.' (so never '..', a path or a hidden directory).

    Raises:
        UsageError: the name breaks that rule; the message names the rule and the name.

    Example:
        >>> check_name("table2-50x3_v1.2")
        'table2-50x3_v1.2'
    """
    if not _SAFE_NAME.fullmatch(name):
        raise UsageError(f"{what} {name!r} is not allowed: use {NAME_RULE}")
    return name


def _coerce(source: str, name: str, value: Any) -> Any:
    if name not in SETTING_FIELDS:
        return value
    try:
        return _coerce_setting(name, value)
    except UsageError as exc:
        raise _fail(source, exc) from None


def _problem_fields(source: str, problem: str) -> list[str]:
    try:
        return [f.name for f in dataclasses.fields(problem_class(problem))]
    except UsageError as exc:
        raise _fail(source, exc) from None


def _parse_grid(source: str, index: int, grid: dict[str, Any], settings: dict[str, Any]) -> dict[str, list[Any]]:
    where = "[grid]" if index == 0 else f"[[grid]] number {index + 1}"
    if "problem" not in grid:
        raise _fail(source, f"{where} has no 'problem' axis; write e.g. problem = [\"helmholtz\"]")
    axes: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list):
            raise _fail(source, f"{where} {key} must be a list of values, e.g. {key} = [{json.dumps(values)}]")
        if not values:
            raise _fail(source, f"the campaign has no runs: {where} axis {key!r} is empty")
        axes[key] = values
    fields = {name: _problem_fields(source, name) for name in axes["problem"] if _is_str(source, "problem", name)}
    parameters = {p for names in fields.values() for p in names}
    for key in axes:
        if key not in AXES and key not in SETTING_FIELDS and key not in parameters:
            raise _fail(source, unknown_choice(f"{where} key", key, [*AXES, *SETTING_FIELDS, *sorted(parameters)]))
        if key in settings:
            raise _fail(source, f"{key!r} is both a {where} axis and a fixed [settings] value; keep one")
    for name in axes.get("backend", []):
        _check_backend(source, name)
    if "architecture" in axes:
        clash = [k for k in ("width", "depth") if k in axes or k in settings]
        if clash:
            raise _fail(source, f"{where} architecture and {clash[0]} both set the network; keep one")
        for pair in axes["architecture"]:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)):
                raise _fail(source, f"architecture must be a list of [width, depth] pairs, e.g. [[50, 5]], "
                                    f"got {pair!r} in it")
    for key, values in axes.items():
        if key in SETTING_FIELDS:
            axes[key] = [_coerce(source, key, v) for v in values]
    return axes


def _is_str(source: str, axis: str, value: Any) -> bool:
    if not isinstance(value, str):
        raise _fail(source, f"{axis} values must be names (strings), got {value!r}")
    return True


def _check_backend(source: str, name: Any) -> None:
    """An unknown or uninstalled backend is a usage error, found without importing the framework."""
    _is_str(source, "backend", name)
    status = backend_status()
    if name not in status:
        raise _fail(source, unknown_choice("backend", name, status))
    if name in BUILTIN_BACKENDS and "not installed" in status[name]:
        raise _fail(source, f"backend {name!r} is not installed; install it with: "
                            f"pip install 'gradpath[{BUILTIN_BACKENDS[name][2]}]'")


def expand(campaign: Campaign, store: Store | None = None) -> list[RunSpec]:
    """Every run of the campaign, in grid order, without duplicates (same key: listed once).

    Frozen-weights runs whose annealed partner is not complete in ``store`` (every one, without a
    store) are left out; :func:`plan` lists them.

    Raises:
        UsageError: an invalid setting or parameter value in some combination.
    """
    return plan(campaign, store).specs


def plan(campaign: Campaign, store: Store | None = None) -> Plan:
    """The campaign's runs (as :func:`expand`) and its frozen-weights runs that wait for their partner.

    A run with ``loss_weights = "frozen"`` and method M1 (M3) gets the final weights of its M2 (M4)
    partner complete in ``store`` as explicit numbers, so its key is that of the same numbers given
    by hand; while the partner is not complete it is a :class:`Waiting` entry, not a run.

    Raises:
        UsageError: an invalid setting or parameter value in some combination.
    """
    specs: dict[str, RunSpec] = {}
    waiting: dict[str, Waiting] = {}
    problems: dict[tuple[str, str], Any] = {}
    for grid in campaign.grids:
        for problem_name in grid["problem"]:
            fields = _problem_fields(campaign.source, problem_name)
            axes = {k: v for k, v in grid.items() if k != "problem" and (k in AXES or k in SETTING_FIELDS or k in fields)}
            axes.setdefault("backend", ["jax"])
            for combo in itertools.product(*axes.values()):
                chosen = dict(zip(axes, combo))
                spec = _spec(campaign, problem_name, chosen, fields, problems, store)
                if isinstance(spec, Waiting):
                    waiting.setdefault(spec.name + spec.partner.key, spec)
                else:
                    specs.setdefault(spec.key, spec)
    if not specs and not waiting:
        raise _fail(campaign.source, "the campaign has no runs")
    return Plan(list(specs.values()), list(waiting.values()))


def _spec(campaign: Campaign, problem_name: str, chosen: dict[str, Any], fields: list[str],
          cache: dict[tuple[str, str], Any], store: Store | None = None) -> RunSpec | Waiting:
    fixed = campaign.parameters.get(problem_name, {})
    clash = [k for k in chosen if k in fixed]
    if clash:
        raise _fail(campaign.source, f"{clash[0]!r} is both a grid axis and a fixed [parameters.{problem_name}] "
                                     "value; keep one")
    params = {**fixed, **{k: v for k, v in chosen.items() if k in fields}}
    settings = {**campaign.settings, **{k: v for k, v in chosen.items() if k in SETTING_FIELDS}}
    if "architecture" in chosen:
        settings["width"], settings["depth"] = chosen["architecture"]
    cache_key = (problem_name, json.dumps(params, sort_keys=True))
    try:
        if cache_key not in cache:
            cache[cache_key] = get_problem(problem_name, **params)
        problem = cache[cache_key]
        if settings.get("loss_weights") == FROZEN:
            settings = {k: v for k, v in settings.items() if k != "loss_weights"}  # M2/M4: the paper's ones
            if settings.get("method", "M1") in ANNEALED_PARTNER:
                return _frozen(store, problem_name, problem, chosen["backend"], settings)
        # a grid crosses methods with annealing options and gate forms: each applies where it means
        # something, so a plain M1 run is the same run (the same key) whatever the grid's weighting
        settings = applicable(settings)
        resolved = TrainSettings(**settings).resolved(problem)
    except UsageError as exc:
        raise _fail(campaign.source, f"{problem_name} with {_describe(params, settings)}: {exc}") from None
    config = {"problem": problem_name, "parameters": problem.parameters(), "backend": chosen["backend"],
              "settings": resolved}
    return RunSpec(problem=problem_name, parameters=problem.parameters(), backend=chosen["backend"],
                   settings=settings, config=config, key=config_hash(config), name=run_name(config))


def _frozen(store: Store | None, problem_name: str, problem: Any, backend: str,
            settings: dict[str, Any]) -> RunSpec | Waiting:
    """The frozen-weights run of ``settings`` (M1/M3) with its partner's final weights, or why it waits."""
    partner = partner_spec(problem_name, problem, backend, settings)
    try:
        if store is None:
            raise NotReady(f"frozen loss weights are read from the campaign's store; none was given to find "
                           f"{partner.name} in")
        frozen, _ = frozen_settings(store, problem_name, problem, backend, settings)
    except NotReady as exc:
        s = TrainSettings(**applicable(settings))
        return Waiting(f"{problem_name}-{s.method}-{backend}-s{s.seed}", partner, str(exc))
    return make_spec(problem_name, problem, backend, frozen)


def _describe(params: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in {**params, **settings}.items()) or "the defaults"


def load_campaign(source: str) -> Campaign:
    """The campaign named by ``source``: a preset name (see :mod:`gradpath.suite.campaigns.presets`) or a TOML file.

    Raises:
        UsageError: an unknown preset, a missing or malformed file, an invalid campaign.
    """
    from gradpath.suite.campaigns.presets import PRESETS, preset_data

    path = Path(source)
    if source in PRESETS:
        return parse_campaign(preset_data(source), f"preset {source}", default_name=source)
    if path.suffix.lower() == ".toml" or path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"campaign file {source!r} does not exist; give a preset "
                             f"({', '.join(PRESETS)}) or a .toml file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"campaign file {source!r} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"campaign file {source!r} is not valid TOML: {exc}") from None
        return parse_campaign(data, source, default_name=path.stem)
    error = unknown_choice("preset", source, PRESETS)
    raise UsageError(f"{error}; or give a campaign .toml file")
