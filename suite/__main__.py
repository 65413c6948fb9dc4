"""``python -m suite`` is the ``gradpath`` command."""

from gradpath.suite.cli import main

raise SystemExit(main())
