"""Backend-agnostic PDE problems and their registry.

Built-in problems sit in a table; third-party packages add more through the ``gradpath.problems``
entry-point group (each entry point names a :class:`Problem` subclass whose ``name`` is the entry
point's name).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from gradpath.problems.core import Problem as Problem
from gradpath.problems.core import Term as Term
from gradpath.problems.errors import UsageError as UsageError
from gradpath.problems.errors import plugin_failed, unknown_choice
from gradpath.problems.geometry import Box as Box

BUILTIN: dict[str, str] = {
    "helmholtz": "gradpath.problems.helmholtz:Helmholtz",
    "klein-gordon": "gradpath.problems.klein_gordon:KleinGordon",
    "poisson1d": "gradpath.problems.poisson1d:Poisson1D",
    "cavity": "gradpath.problems.cavity:Cavity",
}


def _load(target: str) -> type[Problem]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@lru_cache(maxsize=None)
def problem_sources() -> dict[str, str]:
    """Every registered problem name mapped to where it comes from (``builtin`` or a plugin)."""
    sources = {name: "builtin" for name in BUILTIN}
    for ep in entry_points(group="gradpath.problems"):
        sources.setdefault(ep.name, f"plugin {ep.value}")
    return sources


def problem_class(name: str) -> type[Problem]:
    """The Problem subclass registered under ``name``."""
    if name in BUILTIN:
        return _load(BUILTIN[name])
    for ep in entry_points(group="gradpath.problems"):
        if ep.name == name:
            try:
                cls = ep.load()
                if not (isinstance(cls, type) and issubclass(cls, Problem) and dataclasses.is_dataclass(cls)):
                    raise TypeError(f"{cls!r} is not a Problem subclass decorated with @dataclass")
            except Exception as exc:  # a broken plugin must name itself, not break the others
                raise plugin_failed("problem", name, ep.value, exc) from exc
            _require_matching_name(name, ep.value, cls)
            return cls
    raise unknown_choice("problem", name, problem_sources())


def _require_matching_name(entry_point: str, target: str, cls: type[Problem]) -> None:
    """Raise a UsageError unless the class's ``name`` equals the entry-point name it is registered under.

    Runs are recorded and found under the entry-point name, while the problem's own messages, figures
    and the conformance kit use its ``name``: two names for one problem are refused, not recorded.
    """
    declared = getattr(cls, "name", None)
    if declared == entry_point:
        return
    has = f"sets name = {declared!r}" if isinstance(declared, str) else "sets no name"
    fix = f"rename the entry point to {declared!r} or set" if isinstance(declared, str) else "set"
    raise UsageError(f"problem plugin {entry_point!r} ({target}): class {cls.__name__} {has}, but the entry-point "
                     f"name must equal the class's name; {fix} name = {entry_point!r} in {cls.__name__}")


def get_problem(name: str, **params: Any) -> Problem:
    """Build the problem ``name`` with the given parameters (strings are converted to the field type).

    Example:
        >>> get_problem("helmholtz", a2=1).a2
        1.0
    """
    cls = problem_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in params.items():
        if key not in fields:
            raise unknown_choice(f"parameter of {name}", key, fields)
        values[key] = _parameter_value(name, key, type(fields[key].default), value)
    return cls(**values)


def _parameter_value(problem: str, key: str, kind: type, value: Any) -> Any:
    """``value`` as the field's type, or a UsageError: nothing is truncated or guessed, since the value
    is part of the run's key (3.7 read as 3 would find, and report, the runs of 3)."""
    what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
    bad = UsageError(f"parameter {key} of {problem} must be {what}, got {value!r}")
    if isinstance(value, bool) and kind is not bool:
        raise bad
    try:
        if kind is int:
            if isinstance(value, int):
                return value
            number = float(value)
            if not number.is_integer():
                raise bad
            return int(number)
        converted = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if kind is float and not math.isfinite(converted):
        raise UsageError(f"parameter {key} of {problem} must be finite, got {value!r}")
    return converted


def problem_names() -> list[str]:
    """Sorted names of every registered problem."""
    return sorted(problem_sources())
