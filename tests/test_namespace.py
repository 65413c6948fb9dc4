"""gradpath installs as one namespace: gradpath.problems, gradpath.backends, gradpath.suite.

The repository's folders are problems/, backends/ and suite/, but an installed gradpath must not
put those generic names into site-packages, where a user's own problems/ folder or suite.py would
shadow them (or they would shadow the user's).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("problems", "backends", "suite")


def test_nothing_installs_under_a_generic_top_level_name(tmp_path):
    """From a folder outside the checkout, the layers import as gradpath.* and never as themselves."""
    code = (
        "import importlib, sys\n"
        "import gradpath.suite.cli.commands, gradpath.backends.training, gradpath.problems\n"
        "for name in ('problems', 'backends', 'suite'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit(f'{name} is importable as a top-level package')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('problems', 'backends', 'suite'))\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_sources_import_the_layers_only_through_gradpath():
    """A bare ``from problems import ...`` works from the checkout's root and nowhere else."""
    bare = re.compile(r"^\s*(from|import)\s+(problems|backends|suite|benchmarks)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for layer in (*LAYERS, "tests", "benchmarks")
                 for p in (ROOT / layer).rglob("*.py") if bare.search(p.read_text())]
    assert not offenders, f"import through gradpath.* instead: {offenders}"


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages by hand (package-dir maps them); a new subpackage must be added there."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {"gradpath." + ".".join(p.parent.relative_to(ROOT).parts)
               for layer in LAYERS for p in (ROOT / layer).rglob("__init__.py")}
    assert on_disk == listed, f"missing from pyproject.toml: {sorted(on_disk - listed)}; stale: {sorted(listed - on_disk)}"
