"""The problem registry: a plugin's entry-point name must equal its class's ``name``.

Runs are recorded under the entry-point name while the problem's messages and figures use the
class's ``name``; a mismatch is refused with one line naming both and the fix (issue 22), instead
of being accepted and recorded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass

import pytest

import gradpath.problems
from gradpath.problems import BUILTIN, Problem, UsageError, get_problem, problem_class, problem_names
from gradpath.problems.poisson1d import Poisson1D
from gradpath.suite.cli.commands import main


@dataclass(frozen=True, kw_only=True)
class Renamed(Poisson1D):
    name = "poisson-renamed"


@dataclass(frozen=True, kw_only=True)
class Nameless(Problem):
    """A problem class that sets no ``name`` (never built: the registry refuses it first)."""


class _EntryPoint(importlib.metadata.EntryPoint):
    """An entry point whose ``load`` returns a class of this module (no package to install)."""

    def load(self):
        return {"test_problem_registry:Renamed": Renamed, "test_problem_registry:Nameless": Nameless}[self.value]


@pytest.fixture
def plugins(monkeypatch):
    """Register extra ``gradpath.problems`` entry points, {entry-point name: value}, beside the real ones."""
    real = importlib.metadata.entry_points

    def register(extra: dict[str, str]) -> None:
        def entry_points(*, group, **kwargs):
            eps = list(real(group=group, **kwargs))
            if group == "gradpath.problems":
                eps += [_EntryPoint(name, value, group) for name, value in extra.items()]
            return eps
        monkeypatch.setattr(gradpath.problems, "entry_points", entry_points)
        gradpath.problems.problem_sources.cache_clear()

    yield register
    gradpath.problems.problem_sources.cache_clear()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gradpath: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_every_builtin_is_registered_under_its_class_name():
    for key in BUILTIN:
        assert problem_class(key).name == key


@pytest.mark.skipif(importlib.util.find_spec("gradpath_poisson2d") is None,
                    reason="the example plugin is not installed: pip install -e tests/plugin_example")
def test_the_example_plugin_is_registered_under_its_class_name():
    assert problem_class("poisson2d").name == "poisson2d"


def test_a_plugin_whose_names_agree_loads(plugins):
    plugins({"poisson-renamed": "test_problem_registry:Renamed"})
    assert problem_class("poisson-renamed") is Renamed
    assert get_problem("poisson-renamed", C=2).name == "poisson-renamed"


def test_a_name_mismatch_is_one_line_naming_both_names_and_the_fix(plugins):
    plugins({"other-name": "test_problem_registry:Renamed"})
    assert "other-name" in problem_names()  # still listed, so that `gradpath list` can show the error
    with pytest.raises(UsageError) as info:
        problem_class("other-name")
    message = str(info.value)
    assert "\n" not in message
    assert message == ("problem plugin 'other-name' (test_problem_registry:Renamed): class Renamed sets "
                       "name = 'poisson-renamed', but the entry-point name must equal the class's name; rename "
                       "the entry point to 'poisson-renamed' or set name = 'other-name' in Renamed")
    with pytest.raises(UsageError, match="entry-point name must equal"):
        get_problem("other-name")


def test_a_class_without_a_name_is_refused(plugins):
    plugins({"nameless": "test_problem_registry:Nameless"})
    with pytest.raises(UsageError) as info:
        problem_class("nameless")
    assert str(info.value) == ("problem plugin 'nameless' (test_problem_registry:Nameless): class Nameless sets "
                               "no name, but the entry-point name must equal the class's name; set "
                               "name = 'nameless' in Nameless")


def test_the_cli_refuses_a_mismatch_and_lists_it_as_failed(plugins, capsys, tmp_path):
    plugins({"other-name": "test_problem_registry:Renamed"})
    assert main(["run", "other-name", "--iterations", "10", "--quiet", "--out", str(tmp_path)]) == 2
    assert "'other-name'" in (err := _one_error_line(capsys)) and "'poisson-renamed'" in err
    assert not [p for p in tmp_path.iterdir() if p.name != ".locks"]  # nothing recorded
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("other-name"))
    assert "(failed to load: problem plugin 'other-name'" in row and "entry-point name must equal" in row
    assert any(line.strip().startswith("helmholtz") and "failed" not in line for line in out.splitlines())
