"""asv benchmarks of gradpath (``asv run``; see README "Performance").

Files are ``bench_<stage>.py``; ``inputs.py`` builds what they share. The other modules here
(``core_check.py``, ...) are scripts run with ``PYTHONPATH=. python benchmarks/<name>.py``: asv
imports them too, so they define no ``time_``/``track_``/``peakmem_`` names and do their work
only under ``if __name__ == "__main__"``.
"""
