"""The asv suite of gradpath (``asv run``; docs/performance.md "asv").

Only asv benchmarks live here: ``bench_step.py`` (step, chunk, seed-vectorised chunk, compile),
``bench_accuracy.py`` (error after fixed-seed steps), and ``compat.py``, through which they reach
gradpath. asv runs this folder from the working tree against every commit it builds, so no module
here imports gradpath at import time: ``setup`` does, through ``compat``, and a feature a commit
lacks is a skip (NotImplementedError), never an ImportError. The measurement scripts are modules
of gradpath.suite.perf; the store analyses are ``gradpath analyse``.
"""
