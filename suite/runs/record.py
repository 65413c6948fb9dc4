"""The run record: one directory per run, readable with json, csv and numpy alone.

Layout (``<out>/<problem>-<method>-<backend>-s<seed>-<hash>/``):

- ``config.json``: the resolved configuration (problem, its parameters, backend, settings); its hash names the run.
- ``manifest.json``: where and how the run ran (see :mod:`gradpath.suite.runs.manifest`).
- ``history.csv``: one row per log (``step, seconds, loss_<term>, weight_<term>``, metrics), written and
  flushed as each row arrives, so a killed run keeps everything it had logged.
- ``summary.json``: the final summary of :func:`gradpath.backends.training.train` plus ``status``: ``running``
  while training, then ``complete``, ``diverged``, ``interrupted`` or ``failed``.
- ``params.npz``: final parameters and ``loss_weights`` (complete and diverged runs).
- ``gradients.npz``: per-layer gradient histograms of each loss term at chosen steps, when recorded
  (:class:`gradpath.backends.diagnostics.GradientRecord`; see :func:`save_gradients`).
- ``checkpoint.npz``: while a run trains, the newest :class:`gradpath.backends.checkpoint.Checkpoint`
  (see :func:`save_checkpoint`), from which a killed run goes on; removed once the run is done.

JSON files are replaced atomically (temporary file + ``os.replace``); non-finite floats become null.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import secrets
from datetime import datetime, timezone
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gradpath.backends.checkpoint import Checkpoint
from gradpath.backends.diagnostics import GradientRecord
from gradpath.problems.errors import UsageError

CONFIG, MANIFEST, HISTORY, SUMMARY, PARAMS = "config.json", "manifest.json", "history.csv", "summary.json", "params.npz"
GRADIENTS, CHECKPOINT = "gradients.npz", "checkpoint.npz"
DONE = ("complete", "diverged")  # the statuses of a finished run: nothing goes on from it
STATUSES = ("running", *DONE, "interrupted", "failed")  # every status a summary.json may hold
# The summary fields that gradpath writes (gradpath.backends.training, gradpath.suite.runs.recording, gradpath.suite.runs.restore), by the
# JSON type each holds where present; the primary metric's own field (``metric`` names it) is a number too.
# A finished run whose summary breaks these is not done (gradpath.suite.runs.store.inspect_record): its numbers
# would reach the tables as text, or a run counted as complete would have no error to average.
SUMMARY_NUMBERS = ("steps", "error", "train_seconds", "wall_seconds", "ms_per_step", "ms_per_step_mean",
                   "compile_seconds", "diverged_at_step", "vectorised_seeds")
SUMMARY_TEXTS = ("metric", "device", "device_name", "finished", "failure", "traceback", "restored_from")
SUMMARY_FLAGS = ("diverged",)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None and numpy scalars by Python ones (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def replace_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then move it over
    ``path``: readers see the old file or the new one, never half of either (used by every record writer)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Mapping[str, Any]) -> None:
    """Write ``obj`` as indented, strict JSON to ``path`` atomically: readers see the old file or the new one."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    replace_atomically(Path(path), lambda f: f.write(text.encode()))


def config_hash(config: Mapping[str, Any], length: int = 8) -> str:
    """A short hex digest of ``config``, independent of key order.

    Example:
        >>> config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
        True
    """
    canonical = json.dumps(json_safe(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def run_name(config: Mapping[str, Any]) -> str:
    """The run directory's name, e.g. ``helmholtz-M4-jax-s0-1a2b3c4d``."""
    s = config["settings"]
    return f"{config['problem']}-{s['method']}-{config['backend']}-s{s['seed']}-{config_hash(config)}"


def is_number(value: Any) -> bool:
    """A JSON number (int or float; NaN and infinities included), not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summary_field_kinds(summary: Mapping[str, Any]) -> dict[str, str]:
    """The expected JSON kind (``number``, ``text`` or ``flag``) of each summary field whose kind is known."""
    kinds = {**dict.fromkeys(SUMMARY_NUMBERS, "number"), **dict.fromkeys(SUMMARY_TEXTS, "text"),
             **dict.fromkeys(SUMMARY_FLAGS, "flag")}
    metric = summary.get("metric")
    if isinstance(metric, str) and metric not in kinds:
        kinds[metric] = "number"
    return kinds


def _is_finite(value: float) -> bool:
    """A finite number that a float can hold (JSON integers have no size limit)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def ill_typed_fields(summary: Mapping[str, Any]) -> dict[str, str]:
    """Each known field of ``summary`` that holds the wrong JSON type, with what it should be.
    null (None) fits every kind: the training loop writes null where a field does not apply.

    Example:
        >>> ill_typed_fields({"error": "abc", "steps": 10, "metric": "rel_l2", "diverged": False})
        {'error': 'a number'}
    """
    # an integer beyond 64 bits is no count or time gradpath writes, and no table column can hold it
    fits = {"number": lambda v: is_number(v) and (isinstance(v, float) or -2**63 <= v < 2**63),
            "text": lambda v: isinstance(v, str), "flag": lambda v: isinstance(v, bool)}
    wanted = {"number": "a number", "text": "text", "flag": "true or false"}
    return {name: wanted[kind] for name, kind in summary_field_kinds(summary).items()
            if summary.get(name) is not None and not fits[kind](summary[name])}


def finished_summary_problem(summary: Mapping[str, Any]) -> str:
    """Why a summary whose status is complete or diverged cannot stand for a finished run ("" if it can).

    A complete run needs a finite, positive ``error`` (the tables average it and take its logarithm;
    a relative error of exactly 0 is no training result) and a numeric ``steps``
    (its history must reach it), and must not say ``diverged``: true; every known field must hold
    its JSON type. A diverged run's error may be null.
    """
    wrong = ill_typed_fields(summary)
    if wrong:
        name, kind = next(iter(wrong.items()))
        return f"{name} is {json.dumps(summary[name])[:40]}, not {kind}"
    if not is_number(summary.get("steps")):
        return "no steps"
    status = summary.get("status")
    if status == "complete":
        error = summary.get("error")
        if not is_number(error) or not _is_finite(error):
            return "a complete run without a finite error" + ("" if "error" in summary else " (no error field)")
        if error <= 0:  # a relative error of a trained network; the tables take its logarithm
            return f"a complete run with error {error}, not a positive number"
        if summary.get("diverged") is True:  # its error would be averaged as a finished run's
            return "complete, but diverged is true"
    return ""


def read_status(path: str | os.PathLike) -> str | None:
    """The ``status`` of the run in directory ``path``, or None if it has no readable summary."""
    try:
        return json.loads((Path(path) / SUMMARY).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


class HistoryWriter:
    """Appends history rows to a CSV file, one flushed line per row; the first row fixes the columns."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = None
        self._writer: csv.DictWriter | None = None

    def append(self, row: Mapping[str, Any]) -> None:
        """Write ``row`` (the same keys every time) and flush it to the operating system."""
        if self._writer is None:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None


class RunRecord:
    """The directory of one run and the files in it (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.history = HistoryWriter(path / HISTORY)

    @classmethod
    def create(cls, out: str | os.PathLike, config: Mapping[str, Any], manifest: Mapping[str, Any],
               *, force: bool = False, resume: Checkpoint | None = None,
               keep_checkpoint: bool = False, name: str | None = None) -> RunRecord:
        """Start the record of ``config`` under ``out``: config, manifest and a ``running`` summary.

        With ``resume`` (the run's checkpoint), the history is rewritten up to the checkpoint, the
        manifest lists the processes before this one (:func:`_resumed_manifest`) and the
        checkpoint file is kept (until a newer one replaces it); otherwise the history starts
        afresh and so does the checkpoint.

        ``keep_checkpoint`` is for a record that only says why a run could not start: it must not
        cost the run its checkpoint, nor the earlier manifest that names the processes that trained
        it so far (the next process to go on from the checkpoint lists them, :func:`_resumed_manifest`).

        ``name``: the directory's name, if not :func:`run_name` (a diagnostics preset names its runs by label).

        Raises:
            UsageError: the directory already holds a done run (complete or diverged) and ``force`` is False.
        """
        path = Path(out) / (name or run_name(config))
        status = read_status(path)
        if not force and status in DONE:
            raise UsageError(f"run directory {path} already holds a {status} run; pass --force to overwrite")
        path.mkdir(parents=True, exist_ok=True)
        keep = resume is not None or keep_checkpoint
        for stale in (HISTORY, PARAMS, GRADIENTS) if keep else (HISTORY, PARAMS, GRADIENTS, CHECKPOINT):
            (path / stale).unlink(missing_ok=True)
        write_json(path / CONFIG, config)
        if not (keep_checkpoint and (path / MANIFEST).is_file()):
            write_json(path / MANIFEST, manifest if resume is None else _resumed_manifest(path, manifest, resume))
        write_json(path / SUMMARY, {"status": "running"})
        record = cls(path)
        for row in resume.history if resume is not None else ():
            record.history.append(row)
        return record

    def finish(self, status: str, summary: Mapping[str, Any], params: Mapping[str, np.ndarray] | None = None,
               compilation: Mapping[str, Any] | None = None) -> None:
        """Close the history and flush it to disk, save ``params`` (if given) and write the summary with ``status``.

        ``compilation`` (how the backend ran the steps, :attr:`gradpath.backends.training.TrainResult.compilation`)
        joins the manifest. The summary comes last: it must never announce history rows that a crash could still lose.
        """
        self.history.close()
        _fsync(self.path / HISTORY)
        if params is not None:
            replace_atomically(self.path / PARAMS, lambda f: np.savez(f, **params))
        if compilation:
            about = json.loads((self.path / MANIFEST).read_text())
            write_json(self.path / MANIFEST, {**about, "compilation": dict(compilation)})
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(self.path / SUMMARY, {**summary, "finished": finished, "status": status})
        if status in DONE:
            (self.path / CHECKPOINT).unlink(missing_ok=True)


def _fsync(path: os.PathLike) -> None:
    """Flush ``path`` to disk; a file that does not exist (or cannot be opened) is left alone."""
    try:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    except OSError:
        pass


def save_gradients(directory: str | os.PathLike, record: GradientRecord) -> Path:
    """Write ``record`` to ``<directory>/gradients.npz`` atomically (compressed: most bins are empty)."""
    path = Path(directory) / GRADIENTS
    replace_atomically(path, lambda f: np.savez_compressed(f, **record.arrays()))
    return path


def load_gradients(path: str | os.PathLike) -> GradientRecord:
    """Read a ``gradients.npz`` (or the run directory holding one) written by :func:`save_gradients`."""
    path = Path(path)
    if path.is_dir():
        path = path / GRADIENTS
    with np.load(path) as arrays:
        return GradientRecord.from_arrays(arrays)


def save_checkpoint(directory: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``<directory>/checkpoint.npz`` atomically: a kill leaves the old one or the new one."""
    path = Path(directory) / CHECKPOINT
    replace_atomically(path, lambda f: np.savez(f, **checkpoint.arrays()))
    return path


def load_checkpoint(directory: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint in run directory ``directory``; None if there is none or it cannot be read (then it is removed)."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with np.load(path) as arrays:
            return Checkpoint.from_arrays(arrays)
    except Exception:  # torn, damaged (BadZipFile, ...) or another format: the run starts afresh
        path.unlink(missing_ok=True)
        return None


def _resumed_manifest(directory: str | os.PathLike, manifest: Mapping[str, Any], checkpoint: Checkpoint) -> dict[str, Any]:
    """``manifest`` of a process that goes on from ``checkpoint``, with the processes before it.

    Adds ``earlier_processes`` (each one's start, host, commit and the step it stopped at, read
    from the run's old manifest) and ``first_started`` (when the first of them started).
    """
    try:
        old = json.loads((Path(directory) / MANIFEST).read_text())
    except (OSError, ValueError):
        old = {}
    before = {k: old.get(k) for k in ("started", "hostname", "git_commit", "git_dirty")}
    earlier = [*old.get("earlier_processes", []), {**before, "stopped_at_step": checkpoint.step}]
    return {**manifest, "earlier_processes": earlier,
            "first_started": earlier[0].get("started") or manifest.get("started")}


def writable_directory(path: str | Path, option: str = "--out", what: str = "directory") -> Path:
    """``path`` as a directory that exists and takes a file, created where missing; else a one-line
    UsageError that calls it ``what`` and names ``option``. The one writability check of gradpath
    (results directories, and the store's root through :class:`gradpath.suite.runs.store.Store`): checked before
    anything is trained, so that a directory that cannot be written never costs a campaign's training."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a file, not a directory; choose another with {option} DIR")
    probe = path / f".probe.{os.getpid()}.{secrets.token_hex(4)}"  # os.access misses read-only mounts
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{what} {str(path)!r} is not writable: {exc.strerror or exc}; "
                         f"choose another with {option} DIR") from None
    return path
