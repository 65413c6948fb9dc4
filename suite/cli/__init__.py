"""The ``gradpath`` command: its parser and one module per group of subcommands.

``commands`` builds the parser and runs ``list``, ``run``, ``campaign``, ``reproduce``, ``report``
and ``restore``; ``listing``, ``cache`` and ``reference`` hold the smaller commands; ``bench`` and
``diagnose`` live in their rooms (:mod:`gradpath.suite.perf`, :mod:`gradpath.suite.diagnostics`).
"""

from gradpath.suite.cli.commands import main

__all__ = ["main"]
