"""The text of ``gradpath list``: every problem, backend, method and option value a run can name."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from gradpath.backends import backend_status
from gradpath.backends.adam import ADAM_FORMS
from gradpath.backends.methods import GATES, METHODS
from gradpath.backends.settings import COMPILE_CHOICES, TrainSettings
from gradpath.backends.weighting import WEIGHTINGS
from gradpath.problems import UsageError, problem_class, problem_sources
from gradpath.problems.errors import plugin_failed

# gradpath.backends.adam documents the two forms in its module Note; these are its one-line versions
ADAM_DESCRIPTIONS = {
    "standard": "eps added to sqrt(v_hat) (PyTorch, optax; default)",
    "tf1": "TensorFlow 1's 'epsilon hat': eps added to sqrt(v), bias correction in the step size (authors' code)",
}


# what each --compile choice does (gradpath.backends.torch.compile_choice), for `gradpath list`
COMPILE_DESCRIPTIONS = {
    "auto": "the route expected to finish the run first: eager, traced or compiled (default)",
    "on": "compiled by inductor, kept as a package in gradpath's cache and loaded by later runs",
    "off": "the Python step, eagerly: no compile time, slower steps (as before auto existed)",
}

def _table(rows: Iterable[tuple[str, ...]]) -> list[str]:
    """Rows aligned in columns, indented by two spaces."""
    rows = list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]


def _problem_row(name: str, source: str) -> tuple[str, str, str]:
    try:
        cls = problem_class(name)
    except UsageError as exc:  # a broken plugin shows its error and breaks nothing else
        return name, source, f"(failed to load: {exc})"
    try:
        params = " ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls))
        problem = cls()  # the network and weighting may depend on parameters (the cavity's form)
        layers = "-".join(map(str, problem.layers))
        weighting = problem.default_weighting
        terms = ",".join(problem.term_names())
    except Exception as exc:  # a plugin class that loads but cannot be built
        return name, source, f"(failed to load: {plugin_failed('problem', name, source.removeprefix('plugin '), exc)})"
    return name, source, f"{params or '(no parameters)'}; net {layers}; weighting {weighting}; terms {terms}"


def listing() -> str:
    """Everything ``gradpath run`` accepts, one section per option."""
    defaults = TrainSettings()
    sections = [
        ("problems (gradpath run PROBLEM --param KEY=VALUE; loss terms for --loss-weight TERM=VALUE):",
         [_problem_row(n, s) for n, s in sorted(problem_sources().items())]),
        ("backends (--backend):", sorted(backend_status().items())),
        (f"methods (--method; default {defaults.method}):", [(m.name, m.description) for m in METHODS.values()]),
        ("weighting variants (--weighting; default: the problem's):",
         [(w.name, w.description) for w in WEIGHTINGS.values()]),
        (f"gate forms (--gate, M3/M4; default {defaults.gate}):", list(GATES.items())),
        (f"adam forms (--adam-form; default {defaults.adam_form}):",
         [(f, ADAM_DESCRIPTIONS.get(f, "")) for f in ADAM_FORMS]),
        (f"compile choices (--compile, torch; jax always compiles; default {defaults.compile}):",
         [(c, COMPILE_DESCRIPTIONS[c]) for c in COMPILE_CHOICES]),
    ]
    lines: list[str] = []
    for title, rows in sections:
        lines += [title, *_table(rows), ""]
    return "\n".join(lines[:-1])
