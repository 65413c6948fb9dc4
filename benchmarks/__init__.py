"""asv benchmarks of gradpath (``asv run``; see README "Performance").

Files are ``bench_<stage>.py``; ``inputs.py`` builds what they share. ``core_check.py`` is a
script (issue 2's measurements), not an asv benchmark: it defines no ``time_``/``track_`` names.
"""
