"""Backends: one package per framework, each turning a problem and a method into a compiled step.

Built-in backends sit in a table checked with ``importlib.util.find_spec``, so listing them works
without the framework installed; third-party ones come from the ``gradpath.backends`` entry points
(each naming a zero-argument callable that returns a :class:`gradpath.backends.protocol.Backend`).
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from importlib.metadata import entry_points

from gradpath.backends.protocol import Backend
from gradpath.problems.errors import UsageError, plugin_failed, unknown_choice

# name -> (module with a ``backend()`` factory, framework module it needs, pip extra)
BUILTIN: dict[str, tuple[str, str, str]] = {
    "jax": ("gradpath.backends.jax", "jax", "jax"),
    "torch": ("gradpath.backends.torch", "torch", "torch"),
}


def backend_status() -> dict[str, str]:
    """Every backend name mapped to ``builtin``/``plugin ...`` plus whether it is installed."""
    out = {}
    for name, (_, framework, extra) in BUILTIN.items():
        ok = importlib.util.find_spec(framework) is not None
        out[name] = "builtin" if ok else f"builtin (not installed: pip install 'gradpath[{extra}]')"
    for ep in entry_points(group="gradpath.backends"):
        if ep.name in out:
            continue
        try:  # import only (the factory builds nothing until a run): a broken plugin shows its error
            ep.load()
            out[ep.name] = f"plugin {ep.value}"
        except Exception as exc:
            out[ep.name] = f"plugin {ep.value} ({plugin_failed('backend', ep.name, ep.value, exc)})"
    return out


@lru_cache(maxsize=None)
def get_backend(name: str) -> Backend:
    """The backend called ``name``; a UsageError if unknown or if its framework is not installed."""
    if name in BUILTIN:
        module, framework, extra = BUILTIN[name]
        if importlib.util.find_spec(framework) is None:
            raise UsageError(f"backend {name!r} is not installed; install it with: pip install 'gradpath[{extra}]'")
        return importlib.import_module(module).backend()
    for ep in entry_points(group="gradpath.backends"):
        if ep.name == name:
            try:
                return ep.load()()
            except Exception as exc:  # a broken plugin names itself and breaks nothing else
                raise plugin_failed("backend", name, ep.value, exc) from exc
    raise unknown_choice("backend", name, backend_status())


def supported_methods(backend: str) -> tuple[str, ...]:
    """The methods (M1-M4) that ``backend`` declares in ``Backend.methods``; all of them if it declares none."""
    from gradpath.backends.methods import METHODS

    return tuple(getattr(get_backend(backend), "methods", tuple(METHODS)))


def require_method(backend: str, method: str) -> None:
    """Raise a UsageError naming the methods ``backend`` offers unless it offers ``method``."""
    offered = supported_methods(backend)
    if method not in offered:
        raise UsageError(f"backend {backend!r} does not offer method {method!r}; choose one of: {', '.join(offered)}")
