"""A campaign's results directory: runs table, the paper's tables and REPORT.md, rebuilt from the store alone.

``results/<campaign>/`` receives ``runs.parquet``, ``runs.csv``, ``history.parquet``,
``<table>.csv/.md/.tex`` (see :mod:`gradpath.suite.analysis.tables`), ``figures/*.png|pdf`` (see :mod:`gradpath.suite.report.plots`)
and ``REPORT.md``. Nothing here trains. A hand-written ``findings.md`` in that directory (what the
numbers mean, which ablation explains which miss) is never overwritten: REPORT.md includes it
verbatim, so a rebuild refreshes every number around it and loses no analysis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gradpath.backends.settings import TrainSettings
from gradpath.suite.analysis.ablation import ablation_section, variants
from gradpath.suite.analysis.balancing import is_balancing
from gradpath.suite.analysis.method_comparison import method_comparisons
from gradpath.suite.campaigns.definition import Campaign
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.analysis.escape import escape_section
from gradpath.suite.runs.manifest import git_output
from gradpath.suite.analysis.paper_comparison import comparison_section, device_names, measured_cells
from gradpath.suite.report.balancing_plots import balancing_report
from gradpath.suite.report.plots import FIGURES, Figure, Skipped, build_figures
from gradpath.suite.report.profiles import FIGURES_ACROSS_CELLS, rank_section
from gradpath.suite.runs.record import DONE
from gradpath.suite.runs.restore import restored_counts
from gradpath.suite.runs.store import Store, gather, write_run_tables
from gradpath.suite.analysis.statistics import FAILURE_FACTOR, failure_gap
from gradpath.suite.analysis.tables import PAPER_STEPS, build_tables, cell_stats, errors_by_cell, table_markdown
from gradpath.suite.analysis.tables import write_result_tables

# Figures of the report (gradpath.suite.report.plots.FIGURES): each takes (runs, history, figures directory, store root)
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


def _last_finished(runs: pd.DataFrame) -> str:
    """When the newest run in the report finished (from the records, so a rebuild gives the same text)."""
    finished = pd.to_datetime(runs.get("finished", pd.Series(dtype=object)), utc=True, errors="coerce").dropna()
    return f"newest run finished {finished.max():%Y-%m-%d %H:%M} UTC" if len(finished) else "no run finished yet"


def _failure_lines(errors: dict[str, pd.Series]) -> str:
    """Why a seed ending above FAILURE_FACTOR x its cell's median counts as failed, measured on these runs."""
    gap = failure_gap([e.to_numpy() for e in errors.values()])
    if not gap["runs"]:
        return ""
    above = (f"{gap['failed']} {'lies' if gap['failed'] == 1 else 'lie'} above it, the lowest at "
             f"{gap['smallest_above']:.2f}" if gap["failed"] else "none lies above it")
    return ("### Failed seeds\n\n"
            f"A seed counts as failed when it ends more than {FAILURE_FACTOR:g}x above its cell's median error "
            f"(log10 ratio {gap['threshold']:.2f}). Over the {gap['runs']} runs of cells with two or more seeds here, "
            f"log10(error / cell median) is at most {gap['largest_below']:.2f} below that threshold and {above}: "
            "the threshold sits in the gap between ordinary seed-to-seed spread and a seed left in a bad phase. "
            "Failed seeds stay in every mean; the tables count them with a Wilson interval.\n\n")


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
                history: pd.DataFrame | None = None, cells: pd.DataFrame | None = None, balancing: str = "") -> str:
    """The text of REPORT.md; ``findings`` (markdown, hand-written) goes in as its own section,
    ``history`` (the long history of the runs) gives the escape steps of :mod:`gradpath.suite.analysis.escape`,
    ``cells`` are the runs' :func:`gradpath.suite.analysis.tables.cell_stats` where the caller has them already, and
    ``balancing`` is the ``balancing`` preset's section
    (:func:`gradpath.suite.report.balancing_plots.balancing_report`)."""
    commit = git_output("rev-parse", "--short", "HEAD")
    devices = device_names(runs)
    # no clock time here: the same store and commit rebuild this page byte for byte
    parts = [f"# {campaign.name}: results beside the paper's\n\n",
             f"{campaign.description}\n\n" if campaign.description else "",
             f"Wang, Teng & Perdikaris (2021), SIAM J. Sci. Comput. 43(5). Built from the store `{store.root}` "
             f"(campaign {campaign.source}; gradpath commit {commit or 'unknown'}); "
             f"{_last_finished(runs)}.\n\n",
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
        cells = cell_stats(runs) if cells is None else cells
        errors = errors_by_cell(runs)
        parts += [comparison_section(cells, runs, errors), rank_section(errors, cells), _failure_lines(errors),
                  ablation_section(cells, errors)]
        if history is not None:
            parts += [escape_section(runs, history)]
    if balancing:  # also before any run finished: it lists what the preset still lacks
        parts += [balancing]
    parts += ["## Tables\n\n"] + [table_markdown(t) + "\n" for t in tables]
    if not tables:
        parts += ["No run has finished yet.\n\n"]
    parts += ["## Figures\n\n"]
    parts += _figure_lines(figures, skipped)
    parts += ["## Files\n\n`runs.csv` / `runs.parquet`: one row per run (config, summary, status); "
              "`history.parquet`: every logged row with its run `key`; `<table>.csv`: every cell's numbers "
              "(n, mean, std, median and geometric mean with 95% bootstrap intervals, failures with a Wilson interval, "
              "diverged, paper, ratio, consistency with the paper, improvement); `<table>.md`, `<table>.tex`: "
              "the layouts above; `comparisons.csv`, `ablations.csv`: every comparison above; `figures/`: every figure above as PNG and PDF.\n"]
    return "".join(parts)


def _write_comparisons(runs: pd.DataFrame, cells: pd.DataFrame, out: Path) -> list[Path]:
    """``comparisons.csv`` (method against method) and ``ablations.csv`` (variant against baseline): every
    number of those REPORT.md tables; a file whose table is empty is removed rather than left stale."""
    errors = errors_by_cell(runs) if not runs.empty else {}
    frames = {"comparisons.csv": lambda: method_comparisons(measured_cells(cells), errors),
              "ablations.csv": lambda: variants(cells, errors)}
    written = []
    for name, build in frames.items():
        table = build() if not cells.empty else pd.DataFrame()
        if table.empty:
            (out / name).unlink(missing_ok=True)
            continue
        table.to_csv(out / name, index=False)
        written.append(out / name)
    return written


def build_report(campaign: Campaign, specs: Sequence[RunSpec], store: Store, out: str | Path) -> list[Path]:
    """Gather ``specs`` from ``store`` and write the results directory ``out``; returns the files written."""
    out = Path(out)
    runs, history = gather(store, specs)
    written = write_run_tables(out, runs, history)
    cells = cell_stats(runs) if not runs.empty else pd.DataFrame()  # once: tables, comparisons and text share it
    tables = build_tables(runs, cells=cells)
    written += write_result_tables(tables, out)
    written += _write_comparisons(runs, cells, out)
    figures, skipped = build_figures(runs, history, out / FIGURES_DIR, store.root, (*FIGURES, *FIGURES_ACROSS_CELLS))
    balancing = ""
    if is_balancing(campaign.name):  # drawn after build_figures, whose clean-up would remove its figures
        balancing, files = balancing_report(runs, history, out, figures_dir=FIGURES_DIR)
        written += files
    findings = out / FINDINGS
    text = findings.read_text() if findings.is_file() else None
    (out / "REPORT.md").write_text(report_text(campaign, runs, tables, figures, store, skipped, text, history,
                                                     cells=cells, balancing=balancing))
    return [*written, *(path for fig in figures for path in fig.files), out / "REPORT.md"]
