"""Dependencies point one way: suite -> backends -> problems; problems import no framework."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "problems": {"torch", "jax", "jaxlib", "backends", "suite"},
    "backends": {"suite"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_dependency_direction(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    for path in files:
        bad = imported_roots(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_shared_backend_code_imports_no_framework():
    for name in ("jets", "losses", "weighting", "adam", "training", "data", "init", "settings", "methods", "diagnostics",
                 "conformance"):
        bad = imported_roots(ROOT / "backends" / f"{name}.py") & {"torch", "jax"}
        assert not bad, f"backends/{name}.py imports {sorted(bad)}"
