"""A campaign's results directory: runs table, the paper's tables and REPORT.md, rebuilt from the store alone.

``results/<campaign>/`` receives ``runs.parquet``, ``runs.csv``, ``history.parquet``,
``<table>.csv/.md/.tex`` (see :mod:`suite.tables`), ``figures/*.png|pdf`` (see :mod:`suite.plots`)
and ``REPORT.md``. Nothing here trains. A hand-written ``findings.md`` in that directory (what the
numbers mean, which ablation explains which miss) is never overwritten: REPORT.md includes it
verbatim, so a rebuild refreshes every number around it and loses no analysis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from backends.settings import TrainSettings
from suite.ablation import ablation_section
from suite.campaign import Campaign, RunSpec
from suite.escape import escape_section
from suite.manifest import _git
from suite.paper_comparison import comparison_section, device_names
from suite.plots import FIGURES, Figure, Skipped, build_figures
from suite.record import DONE
from suite.restore import restored_counts
from suite.store import Store, gather, write_tables
from suite.tables import PAPER_STEPS, build_tables, cell_stats, table_markdown
from suite.tables import write_tables as write_table_files

# Figures of the report (suite.plots.FIGURES): each takes (runs, history, figures directory, store root)
# and returns the figures it drew and those it skipped for want of data.
FIGURES_DIR = "figures"
FINDINGS = "findings.md"  # hand-written, kept across rebuilds, included in REPORT.md

# settings that a campaign varies by design; every other one is compared with the paper's default
DESIGN = ("method", "seed", "width", "depth", "layers", "device", "compile", "weighting")


def _differences(runs: pd.DataFrame) -> list[str]:
    """Settings whose values differ from the paper's defaults (TrainSettings), as 'steps: 200 (paper 40001)'."""
    out = []
    for f in dataclasses.fields(TrainSettings):
        if f.name in DESIGN or f.name not in runs or f.default is None:
            continue
        used = sorted({v for v in runs[f.name].dropna()} - {f.default}, key=str)
        if used:
            out.append(f"`{f.name}`: {', '.join(map(str, used))} (default {f.default})")
    return out


def _status_lines(runs: pd.DataFrame) -> list[str]:
    counts = runs["status"].value_counts()
    lines = [f"- {len(runs)} runs planned: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    bad = runs[~runs["status"].isin(DONE)]
    for _, row in bad.head(20).iterrows():
        why = row.get("failure") if isinstance(row.get("failure"), str) else row.get("reason")
        lines.append(f"  - `{row['name']}`: {row['status']}" + (f" ({why})" if isinstance(why, str) and why else ""))
    if len(bad) > 20:
        lines.append(f"  - ... and {len(bad) - 20} more (see runs.csv)")
    for table, n in sorted(restored_counts(runs).items()):
        lines.append(f"- {n} runs restored from `{table}` (`gradpath restore`): trained before the store "
                     "that holds them now, whose records keep no parameters")
    return lines


def _figure_lines(figures: Sequence[Figure], skipped: Sequence[Skipped]) -> list[str]:
    """The Figures section: each figure with its caption and files, then what was not drawn and why."""
    lines = []
    for i, fig in enumerate(figures, start=1):
        png, pdf = (f"{FIGURES_DIR}/{p.name}" for p in fig.files)
        lines.append(f"**Figure {i}. {fig.title}.** {fig.caption} ([PNG]({png}), [PDF]({pdf}))\n\n"
                     f"![{fig.title}]({png})\n\n")
    if not figures:
        lines.append("No figure could be drawn from the runs so far.\n\n")
    if skipped:
        lines.append("Not drawn (no data for them, so nothing is shown in their place):\n\n")
        lines += [f"- {s.title}: {s.reason}\n" for s in skipped]
        lines.append("\n")
    return lines


def report_text(campaign: Campaign, runs: pd.DataFrame, tables, figures: Sequence[Figure], store: Store,
                skipped: Sequence[Skipped] = (), findings: str | None = None,
                history: pd.DataFrame | None = None) -> str:
    """The text of REPORT.md; ``findings`` (markdown, hand-written) goes in as its own section, and
    ``history`` (the long history of the runs) gives the escape steps of :mod:`suite.escape`."""
    commit = _git("rev-parse", "--short", "HEAD")
    devices = device_names(runs)
    parts = [f"# {campaign.name}: results beside the paper's\n\n",
             f"{campaign.description}\n\n" if campaign.description else "",
             f"Wang, Teng & Perdikaris (2021), SIAM J. Sci. Comput. 43(5). Built "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} from the store `{store.root}` "
             f"(campaign {campaign.source}; gradpath commit {commit or 'unknown'}).\n\n",
             "## Runs\n\n", *[line + "\n" for line in _status_lines(runs)], "\n"]
    differences = _differences(runs)
    if differences:
        parts += ["**Not the paper's settings**, so the paper's values are a reference, not a target: "
                  + "; ".join(differences) + ".\n\n"]
    if "steps" in runs and (runs["steps"].dropna() != PAPER_STEPS).any():
        parts += [f"Runs shorter than the paper's {PAPER_STEPS:,} steps are expected to have larger errors.\n\n"]
    if devices:
        parts += [f"Devices: {', '.join(devices)}. Timings of runs that shared the machine (`--jobs` > 1) "
                  "include that contention.\n\n"]
    if findings:
        parts += [f"## Findings\n\n_Written by hand in `{FINDINGS}` and included as is; every table below is "
                  "rebuilt from the store._\n\n", findings.strip() + "\n\n"]
    if tables:
        cells = cell_stats(runs)
        parts += [comparison_section(cells, runs), ablation_section(cells)]
        if history is not None:
            parts += [escape_section(runs, history)]
    parts += ["## Tables\n\n"] + [table_markdown(t) + "\n" for t in tables]
    if not tables:
        parts += ["No run has finished yet.\n\n"]
    parts += ["## Figures\n\n"]
    parts += _figure_lines(figures, skipped)
    parts += ["## Files\n\n`runs.csv` / `runs.parquet`: one row per run (config, summary, status); "
              "`history.parquet`: every logged row with its run `key`; `<table>.csv`: every cell's numbers "
              "(n, mean, std, median, 95% CI, diverged, paper, ratio, improvement); `<table>.md`, `<table>.tex`: "
              "the layouts above; `figures/`: every figure above as PNG and PDF.\n"]
    return "".join(parts)


def build_report(campaign: Campaign, specs: Sequence[RunSpec], store: Store, out: str | Path) -> list[Path]:
    """Gather ``specs`` from ``store`` and write the results directory ``out``; returns the files written."""
    out = Path(out)
    runs, history = gather(store, specs)
    written = write_tables(out, runs, history)
    tables = build_tables(runs)
    written += write_table_files(tables, out)
    figures, skipped = build_figures(runs, history, out / FIGURES_DIR, store.root, FIGURES)
    findings = out / FINDINGS
    text = findings.read_text() if findings.is_file() else None
    (out / "REPORT.md").write_text(report_text(campaign, runs, tables, figures, store, skipped, text, history))
    return [*written, *(path for fig in figures for path in fig.files), out / "REPORT.md"]
