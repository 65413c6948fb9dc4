"""Dependencies point one way: suite -> backends -> problems; problems import no framework.

Inside suite/, the rooms (runs, campaigns, analysis, report, diagnostics, perf, cli) import each
other in one direction too, with no cycle between modules and no private name imported from
another module.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("problems", "backends", "suite")
FORBIDDEN = {
    "problems": {"torch", "jax", "jaxlib", "gradpath.backends", "gradpath.suite"},
    "backends": {"gradpath.suite"},
}
# which rooms of suite/ each room may import (besides itself); "runs" is the floor
ROOMS = {
    "runs": set(),
    "campaigns": {"runs"},
    "analysis": {"runs"},
    "report": {"runs", "campaigns", "analysis", "perf"},  # perf: the report reads what `gradpath bench` wrote
    "diagnostics": {"runs", "report"},
    "perf": {"runs"},
    "cli": {"runs", "campaigns", "analysis", "report", "diagnostics", "perf"},
}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every absolute import in ``path``; ``import a.b`` gives ("a.b", [])."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, [a.name for a in node.names]))
    return out


def imported_roots(path: Path) -> set[str]:
    """Top-level packages ``path`` imports; gradpath's own by layer (``gradpath.backends``)."""
    roots = set()
    for module, _ in _imports(path):
        parts = module.split(".")
        roots.add(".".join(parts[:2]) if parts[0] == "gradpath" and len(parts) > 1 else parts[0])
    return roots


def _suite_module(path: Path) -> str:
    parts = [p for p in path.relative_to(ROOT / "suite").with_suffix("").parts if p != "__init__"]
    return ".".join(parts)


@functools.lru_cache(maxsize=1)
def suite_graph() -> dict[str, set[str]]:
    """suite module -> the suite modules it imports (``gradpath.suite.`` left off)."""
    modules = {_suite_module(p): p for p in (ROOT / "suite").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for module, names in _imports(path):
            if not module.startswith("gradpath.suite"):
                continue
            inner = module[len("gradpath.suite."):] if module != "gradpath.suite" else ""
            for n in names or [""]:
                candidate = f"{inner}.{n}" if inner and n else (n or inner)
                target = candidate if candidate in modules else inner
                if target in modules and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_dependency_direction(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    for path in files:
        bad = imported_roots(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_imported_roots_sees_the_namespace():
    """The check above would pass vacuously if every gradpath import counted as one root."""
    assert {"gradpath.suite", "gradpath.backends"} <= imported_roots(ROOT / "suite" / "cli" / "commands.py")


def test_shared_backend_code_imports_no_framework():
    shared = [p for p in (ROOT / "backends").glob("*.py") if p.name not in ("__init__.py", "compile_cache.py")]
    assert len(shared) > 10
    for path in shared:
        bad = imported_roots(path) & {"torch", "jax"}
        assert not bad, f"backends/{path.name} imports {sorted(bad)}"


def test_every_suite_module_lives_in_a_room():
    loose = sorted(m for m in suite_graph() if "." not in m and m not in ROOMS and m not in ("", "__main__"))
    assert not loose, f"modules at suite/'s top level: {loose}; put each in one of {sorted(ROOMS)}"


def test_rooms_import_in_one_direction():
    bad = []
    for module, targets in suite_graph().items():
        room = module.split(".")[0]
        if room not in ROOMS:
            continue
        for target in targets:
            other = target.split(".")[0]
            if other != room and other not in ROOMS[room]:
                bad.append(f"{module} -> {target}")
    assert not bad, f"imports against the rooms' direction: {bad}"


def test_no_import_cycle_between_suite_modules():
    graph, state, cycles = suite_graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_name_is_imported_from_another_module():
    """A name with a leading underscore is its module's business (tests may still reach in)."""
    bad = []
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            for module, names in _imports(path):
                if module.startswith("gradpath."):
                    bad += [f"{path.relative_to(ROOT)}: {module}.{n}" for n in names if n.startswith("_")]
    assert not bad, f"private names imported across modules: {bad}"
