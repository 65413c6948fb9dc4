"""Hand edits of a run record, shared by the store and report-integrity tests."""

from __future__ import annotations

import json
from pathlib import Path

from gradpath.suite.runs.record import SUMMARY


def edit_summary(path: Path, **fields) -> None:
    """Change fields of a record's summary.json as a hand edit would (``...``: remove the field)."""
    summary = json.loads((path / SUMMARY).read_text())
    for name, value in fields.items():
        if value is ...:
            del summary[name]
        else:
            summary[name] = value
    (path / SUMMARY).write_text(json.dumps(summary))
