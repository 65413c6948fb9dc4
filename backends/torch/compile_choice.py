"""``--compile`` for torch: ``on`` compiles, ``off`` runs eagerly, ``auto`` takes the route that finishes first.

Three routes compute the same step, each rounding in its own way: ``eager`` (the Python step, op
by op), ``traced`` (the graph that make_fx records from it, run by TorchScript's interpreter
without Python or functorch in between: about 2.8x faster, for a few seconds of tracing) and
``compiled`` (that graph compiled by inductor into an AOTInductor package: about 7x faster than
eager, tens of seconds to build from empty caches, a few hundredths to load once built,
:mod:`gradpath.backends.torch.packages`). Which finishes first depends on the run's length and on the
caches; :func:`plan` estimates each route's set-up and step time before the run starts,
:class:`gradpath.backends.torch.trainer.TorchTrainer` follows it, and the run's manifest records the route
and the reason (``compilation``).

The estimates come from a ledger in the cache folder (``compile/torch/ledger/``, one JSON file
per configuration): each torch run writes what it measured (trace and compile seconds, ms per step
of its route). A configuration seen before is judged on its own numbers and on whether its
packages are built; an unseen one on this machine's typical ratios (the medians over the ledger),
or on :data:`DEFAULTS` before there are any. A wrong estimate costs time, not correctness.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import os
import statistics
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradpath.backends.compile_cache import compile_cache_dir
from gradpath.backends.settings import TrainSettings
from gradpath.backends.torch import packages
from gradpath.problems.core import Problem

# Ratios measured on the 2-core CPU of the development machine (torch 2.13, Helmholtz M4, quiet;
# python -m gradpath.suite.perf.compile_breakdown, results/perf/compile-breakdown), in units of the eager step's
# milliseconds (10.2 ms there): seconds of warm-up for the traced route (make_fx and TorchScript)
# and for the compiled one from empty caches (tracing, export, inductor: 38.6 s) and from warm ones
# (loading its packages: 0.02 s), per eager ms/step; and how many times faster than eager a traced
# and a compiled step run (3.5 and 1.4 ms). The ledger replaces each with this machine's median.
DEFAULTS = {"trace_s": 0.19, "cold_compile_s": 3.8, "warm_compile_s": 0.005, "traced_speedup": 2.9,
            "compiled_speedup": 7.0}
ROUTES = ("compiled", "traced", "eager")
# settings that do not change the compiled graphs (the step count and logging only change how often
# they run, the seed only the numbers that flow through them, and the loss weights are state: the
# step reads them from its input, so ten constants share one graph); every other one may be a constant
NOT_IN_GRAPH = ("seed", "steps", "log_every", "compile", "device", "loss_weights")
_SOURCES = ("backends", "problems")  # the code that builds the graphs


@dataclass(frozen=True)
class CompilePlan:
    """What a torch trainer will do: ``route`` is ``compiled``, ``traced`` or ``eager``; ``reason`` says why in one line."""

    route: str
    reason: str
    key: str
    cache: str  # "warm" (inductor holds this configuration's graphs), "cold", or "" (not consulted)

    def as_dict(self) -> dict[str, Any]:
        """The plan for the run's manifest."""
        return {"route": self.route, "reason": self.reason, "cache": self.cache or None, "ledger_key": self.key}


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """A digest of gradpath's own graph-building code, so that an edit makes configurations unseen."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for package in _SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def configuration_key(problem: Problem, settings: TrainSettings, device: str, lanes: int | None) -> str:
    """The ledger's and the packages' key: everything the compiled graphs depend on (not the seed or
    the run's length): gradpath's and a plugin problem's source, the problem, the settings, the
    device and this machine's hardware, the libraries' versions, inductor's environment."""
    graph = {k: v for k, v in settings.resolved(problem).items() if k not in NOT_IN_GRAPH}
    described = {"problem": problem.name, "parameters": problem.parameters(), "settings": graph,
                 "device": device, "lanes": lanes, "source": _source_digest(),
                 "problem_module": type(problem).__module__, "problem_source": _package_digest(type(problem)),
                 # compiled code is specialised to the machine (inductor builds with -march=native)
                 # and shaped by these libraries and by inductor's own settings
                 "hardware": _hardware(device), "versions": _versions(),
                 "inductor_env": sorted((k, v) for k, v in os.environ.items() if k.startswith("TORCHINDUCTOR_")
                                        and k != "TORCHINDUCTOR_CACHE_DIR")}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=_jsonable).encode()).hexdigest()[:20]


def _jsonable(value: Any) -> str:
    """A parameter JSON cannot hold: arrays by a digest of their bytes (their repr elides), else repr."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {value.shape} {hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}"
    return repr(value)


def _package_digest(cls: type) -> str | None:
    """A digest of the source of the package that defines ``cls`` outside gradpath (a plugin problem:
    its helpers and base classes live beside it), or None for gradpath's own problems."""
    if cls.__module__.split(".")[:2] in (["gradpath", package] for package in _SOURCES):
        return None
    top = cls.__module__.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
        if spec is None:
            return None
        files = sorted(p for folder in (spec.submodule_search_locations or []) for p in Path(folder).rglob("*.py")) \
            or [Path(spec.origin or inspect.getsourcefile(cls) or "")]
        h = hashlib.sha256()
        for path in files:
            h.update(path.as_posix().encode())
            h.update(path.read_bytes())
        return h.hexdigest()[:16]
    except (TypeError, OSError, ImportError, ValueError):
        return None


def _hardware(device: str) -> dict[str, Any]:
    """What compiled code depends on about the machine: CPU model, architecture and vector ISA, or the GPU."""
    import platform

    import torch

    from gradpath.backends.devices import cpu_name

    out: dict[str, Any] = {"machine": platform.machine(), "cpu": cpu_name(),
                           "isa": torch.backends.cpu.get_cpu_capability()}
    if device == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["capability"] = list(torch.cuda.get_device_capability(0))
    return out


def _versions() -> dict[str, str]:
    import array_api_compat
    import numpy as np
    import torch

    return {"torch": torch.__version__, "numpy": np.__version__, "array_api_compat": array_api_compat.__version__}


def ledger_dir() -> Path:
    """Where the ledger lives: ``<user cache>/compile/torch/ledger``."""
    return compile_cache_dir("torch") / "ledger"


def read_entry(key: str) -> dict[str, Any]:
    """What earlier runs measured for configuration ``key`` (empty if nothing, or unreadable)."""
    try:
        return json.loads((ledger_dir() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return {}


def record(key: str, **measured: float | str) -> None:
    """Add ``measured`` (``cold_compile_s``, ``warm_compile_s``, ``trace_s``, ``<route>_ms``,
    ``inductor_cache``) to configuration ``key``'s entry; a ledger that cannot be written is skipped.
    Unlocked: two processes writing one entry at once may lose one's numbers, which only costs an
    estimate (the entry is replaced whole, never torn)."""
    entry = {**read_entry(key), **measured}
    try:
        ledger_dir().mkdir(parents=True, exist_ok=True)
        tmp = ledger_dir() / f".{key}.{uuid.uuid4().hex}.tmp"  # unique across processes and hosts
        tmp.write_text(json.dumps(entry, sort_keys=True))
        os.replace(tmp, ledger_dir() / f"{key}.json")
    except OSError:
        pass


def _inductor_holds(entry: dict[str, Any]) -> bool:
    """Whether the inductor cache that compiled this configuration is still there and in use."""
    where = entry.get("inductor_cache")
    return bool(where) and where == os.environ.get("TORCHINDUCTOR_CACHE_DIR") and Path(where).is_dir() \
        and any(Path(where).iterdir())


def _machine_ratios() -> dict[str, float]:
    """This machine's typical ratios (:data:`DEFAULTS`): medians over the ledger entries that measured them."""
    found: dict[str, list[float]] = {k: [] for k in DEFAULTS}
    try:
        entries = [json.loads(p.read_text()) for p in ledger_dir().glob("*.json")]
    except (OSError, ValueError):
        entries = []
    for e in entries:
        eager = e.get("eager_ms")
        if not eager:
            continue
        for k in ("trace_s", "cold_compile_s", "warm_compile_s"):
            if e.get(k):
                found[k].append(e[k] / eager)
        for k, ms in (("traced_speedup", "traced_ms"), ("compiled_speedup", "compiled_ms")):
            if e.get(ms):
                found[k].append(eager / e[ms])
    return {k: statistics.median(v) if v else DEFAULTS[k] for k, v in found.items()}


def expected_seconds(entry: dict[str, Any], warm: bool, steps: int) -> tuple[dict[str, float], bool]:
    """Expected seconds of each route for ``steps`` steps (set-up plus steps), and whether every number
    came from this configuration's own measurements (else some are this machine's typical ratios)."""
    r = _machine_ratios()
    eager = entry.get("eager_ms") or (entry.get("traced_ms") or 0) * r["traced_speedup"] \
        or (entry.get("compiled_ms") or 0) * r["compiled_speedup"] or 1.0  # 1.0: all in units of the eager step
    compile_key = "warm_compile_s" if warm else "cold_compile_s"
    measured = {"eager_ms": eager, "traced_ms": entry.get("traced_ms"), "compiled_ms": entry.get("compiled_ms"),
                "trace_s": entry.get("trace_s"), "compile_s": entry.get(compile_key)}
    fallback = {"traced_ms": eager / r["traced_speedup"], "compiled_ms": eager / r["compiled_speedup"],
                "trace_s": eager * r["trace_s"], "compile_s": eager * r[compile_key]}
    own = bool(entry.get("eager_ms")) and all(measured[k] for k in fallback)
    m = {k: measured[k] or fallback[k] for k in measured}
    return {"eager": steps * m["eager_ms"] / 1e3,
            "traced": m["trace_s"] + steps * m["traced_ms"] / 1e3,
            "compiled": m["compile_s"] + steps * m["compiled_ms"] / 1e3}, own


def plan(problem: Problem, settings: TrainSettings, device: str, lanes: int | None) -> CompilePlan:
    """How a torch run of ``settings`` will run its steps.

    ``on`` compiles; ``off`` runs the Python step eagerly, as before ``auto`` existed (so that a
    stored ``compile=False`` run is computed the same way again); ``auto`` takes whichever of
    compiled, traced and eager it expects to finish first. The run key records only whether
    compiling was allowed: under ``auto`` one key may be computed by any of the three routes,
    which agree to rounding; the manifest records which one.
    """
    key = configuration_key(problem, settings, device, lanes)
    entry = read_entry(key)
    warm = packages.holds(key) if packages.available() else _inductor_holds(entry)
    cache = "warm" if warm else "cold"
    if settings.compile == "on":
        return CompilePlan("compiled", "--compile on", key, cache)
    if settings.compile == "off":
        return CompilePlan("eager", "--compile off", key, cache)
    seconds, own = expected_seconds(entry, warm, settings.steps)
    route = min(ROUTES, key=lambda r: seconds[r])
    if any(entry.get(f"{r}_ms") for r in ROUTES):  # some step time of this configuration is known: seconds
        shown = ", ".join(f"{r} {seconds[r]:,.1f} s" for r in ROUTES)
        basis = "as measured before" if own else "partly estimated"
    else:  # no time of this configuration yet: the estimate is in multiples of its eager step
        shown = ", ".join(f"{r} {seconds[r] * 1e3:,.0f}" for r in ROUTES) + " eager-step times"
        basis = "estimated"
    reason = f"{settings.compile}: {route} finishes {settings.steps:,} steps first ({shown}; {basis}; {cache} caches)"
    return CompilePlan(route, reason, key, cache)
