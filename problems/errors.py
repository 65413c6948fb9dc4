"""The one exception type for user mistakes, and the message grammar every layer shares.

It lives in the lowest layer (``problems``) so that problems, backends and the suite can all
raise it; only the CLI catches it and turns it into one line and exit code 2.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class UsageError(ValueError):
    """A user asked for something invalid: an unknown name, a bad size, a missing framework."""


def unknown_choice(kind: str, value: object, choices: Iterable[str]) -> UsageError:
    """Build the error for an unknown name, listing the valid ones and a close match.

    Example:
        >>> str(unknown_choice("problem", "helmhotz", ["helmholtz", "poisson1d"]))
        "unknown problem 'helmhotz'; choose one of: helmholtz, poisson1d (did you mean 'helmholtz'?)"
    """
    names = sorted(choices)
    message = f"unknown {kind} {value!r}; choose one of: {', '.join(names)}"
    close = difflib.get_close_matches(str(value), names, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return UsageError(message)


def require_positive(name: str, value: object, *, integer: bool = True) -> None:
    """Raise a UsageError unless ``value`` is a positive number (an integer when ``integer``)."""
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
    if not ok or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        what = "a positive integer" if integer else "a positive number"
        raise UsageError(f"{name} must be {what}, got {value!r}")


def plugin_failed(kind: str, name: str, target: str, exc: BaseException) -> UsageError:
    """The one-line error for a plugin whose entry point cannot be loaded, naming the plugin.

    Example:
        >>> str(plugin_failed("problem", "p2", "pkg:P2", ImportError("no module named 'pkg'")))
        "problem plugin 'p2' (pkg:P2) failed to load: ImportError: no module named 'pkg'"
    """
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, whatever the exception says
    return UsageError(f"{kind} plugin {name!r} ({target}) failed to load: {reason}")
