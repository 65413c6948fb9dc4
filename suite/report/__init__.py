"""A preset's REPORT.md and its figures, built from the store (``build``, ``plots``, ``profiles``)."""
