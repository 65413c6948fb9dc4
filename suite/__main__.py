"""``python -m suite`` is the ``gradpath`` command."""

from suite.cli import main

raise SystemExit(main())
