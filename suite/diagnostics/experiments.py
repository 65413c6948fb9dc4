"""Gradient-pathology experiments of the paper as presets: ``gradpath diagnose fig3|fig4|fig5|fig11``
(the command itself: :mod:`gradpath.suite.diagnostics.command`).

Each preset trains one or more runs through the Trainer protocol (init, warmup, train, gradients,
export) with the paper's settings, and at chosen steps records the per-layer gradient statistics
and histograms of every loss term and the largest Hessian eigenvalue sigma_max of the total loss
and of each term (gradpath.backends.diagnostics). It writes under ``--out`` (default ``results/diagnostics/<preset>``):
one directory per run and seed (``history.csv``, ``gradients.npz``, ``spectra.npz`` where dense
spectra were taken, ``params.npz``, ``summary.json``; see :func:`run_directory`), the figures
(PNG), ``numbers.json`` and a README.md with the measured ratios beside the paper's claims.

Seeds are data: a preset runs every seed of ``Experiment.seeds`` (or those asked for), and a seed
whose run directory is complete (:func:`is_complete`) is read back instead of trained again, so an
interrupted preset resumes and more seeds can be added later.

- ``fig3``: 1-D Poisson, C = 1, 2, 4, M1: per-layer histograms of grad L_r and grad L_ub (Fig. 3).
- ``fig4``: Helmholtz (a2 = 4), M1, full batch: all eigenvalues of the Hessians of L_r and L_ub
  at the end (Fig. 4a) and the loss curves (Fig. 4b).
- ``fig5``: Helmholtz, M1, stiff a2 = 4 vs non-stiff a2 = 1: sigma_max over training (Fig. 5);
  the stiff run's histograms are Fig. 2. Seeds 0-4.
- ``fig11``: Helmholtz (a2 = 4), M1 vs M3: sigma_max over training (Fig. 11). Seeds 0-4.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gradpath.backends import get_backend
from gradpath.backends.data import draw_batches, seed_start
from gradpath.backends.diagnostics import (PARAMETER_SETS, GradientRecord, dense_spectrum, gradient_histograms,
                                  gradient_statistics, hessian_operator, largest_eigenvalue, parameter_keys, weighted)
from gradpath.backends.settings import TrainSettings
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError, require_positive, unknown_choice
from gradpath.suite.runs.record import GRADIENTS, PARAMS, load_gradients, replace_atomically, save_gradients, write_json


@dataclass(frozen=True)
class RunPlan:
    """One training run of an experiment: a label for legends and file names, problem and method."""

    label: str
    problem: str
    parameters: dict[str, float] = field(default_factory=dict)
    method: str = "M1"


@dataclass(frozen=True)
class Experiment:
    """A preset: its runs, how long they train and what is recorded when.

    Attributes:
        gradient_every: steps between gradient checkpoints (also at step 0 and the last step).
        hessian_every: steps between sigma_max checkpoints (0: none).
        hessian_terms: the losses whose sigma_max is tracked (``total`` and/or term names).
        spectrum_terms: losses whose full spectrum is taken densely at the last step.
        full_batch: train on one fixed set of ``batch_size`` points per region (Fig. 4) instead of
            fresh points every step.
        hessian_dtype: precision of the Hessian products.
        width, depth: hidden width and layers (None: the problem's network, as in the paper).
        seeds: the seeds run by default (one run directory per plan and seed).
    """

    name: str
    description: str
    runs: tuple[RunPlan, ...]
    steps: int = 40000
    batch_size: int = 128
    gradient_every: int = 10000
    hessian_every: int = 0
    hessian_terms: tuple[str, ...] = ("total", "residual", "boundary")
    spectrum_terms: tuple[str, ...] = ()
    full_batch: bool = False
    hessian_dtype: str = "float64"
    width: int | None = None
    depth: int | None = None
    seeds: tuple[int, ...] = (0,)


# sigma_max ratios vary from seed to seed: the presets that report them run five seeds
SIGMA_SEEDS = (0, 1, 2, 3, 4)
HELMHOLTZ = {"a1": 1.0, "a2": 4.0}
PRESETS: dict[str, Experiment] = {
    "fig3": Experiment("fig3", "1-D Poisson, C = 1, 2, 4: per-layer gradient histograms of L_r and L_ub (Fig. 3)",
                       tuple(RunPlan(f"C={c}", "poisson1d", {"C": float(c)}) for c in (1, 2, 4))),
    "fig4": Experiment("fig4", "Helmholtz a2 = 4, full batch: Hessian spectra of L_r and L_ub, and the losses (Fig. 4)",
                       (RunPlan("a2=4", "helmholtz", HELMHOLTZ),), batch_size=256, full_batch=True,
                       spectrum_terms=("residual", "boundary"), hessian_dtype="float32"),
    "fig5": Experiment("fig5", "Helmholtz, stiff a2 = 4 vs non-stiff a2 = 1: sigma_max over training (Figs. 2, 5)",
                       (RunPlan("a2=4", "helmholtz", HELMHOLTZ), RunPlan("a2=1", "helmholtz", {"a1": 1.0, "a2": 1.0})),
                       hessian_every=1000, seeds=SIGMA_SEEDS),
    "fig11": Experiment("fig11", "Helmholtz a2 = 4, M1 vs M3: sigma_max over training (Fig. 11)",
                        (RunPlan("M1", "helmholtz", HELMHOLTZ, "M1"), RunPlan("M3", "helmholtz", HELMHOLTZ, "M3")),
                        hessian_every=1000, seeds=SIGMA_SEEDS),
}


def get_experiment(name: str) -> Experiment:
    """The preset called ``name``."""
    if name not in PRESETS:
        raise unknown_choice("diagnostics preset", name, PRESETS)
    return PRESETS[name]


def run_directory(out: Path, plan: RunPlan, seed: int) -> Path:
    """Where the run of ``plan`` with ``seed`` lives under ``out``.

    ``<label>`` (``=`` written as ``-``) for seed 0 and ``<label>-seed-<N>`` for the others: seed 0
    keeps the directory it had before presets ran several seeds, so runs recorded then stay valid.
    """
    name = plan.label.replace("=", "-")
    return Path(out) / (name if seed == 0 else f"{name}-seed-{seed}")


def is_complete(experiment: Experiment, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run.

    :func:`run_one` writes each file whole (atomically) once training has ended, ``history.csv``
    after the others, so a run stopped on the way is not taken for a finished one.
    """
    files = ["history.csv", GRADIENTS, PARAMS] + (["spectra.npz"] if experiment.spectrum_terms else [])
    return all((run_dir / f).is_file() for f in files)


def _due(done: int, every: int, last: int) -> bool:
    return every > 0 and (done % every == 0 or done == last)


def checkpoint(trainer: Any, state: Any, problem: Any, batch: list[np.ndarray], mu: np.ndarray, sigma: np.ndarray,
               settings: TrainSettings, backend: str, *, parameter_set: str = "weights", gradients: bool = True,
               hessian_terms: Sequence[str] = (),
               hessian_dtype: str = "float64") -> tuple[dict[str, float], np.ndarray | None, np.ndarray]:
    """Diagnostics of the current network on one step's ``batch``.

    Returns:
        History columns (gradient statistics of grad(lambda_i L_i) per layer and term, see
        :func:`gradpath.backends.diagnostics.gradient_statistics`; ``sigma_max_<loss>`` per Hessian term;
        ``lanczos_products`` in total), the ``(n_terms, n_keys, N_BINS)`` histograms (or None) and
        the loss weights lambda in force.
    """
    exported = trainer.export(state)
    lam = np.asarray(exported["loss_weights"], np.float64)
    params = {k: np.asarray(v, np.float64) for k, v in exported.items() if k != "loss_weights"}
    keys = parameter_keys(params, parameter_set)
    row: dict[str, float] = {}
    counts = None
    if gradients:
        _, grads = trainer.gradients(state, batch)
        grads = weighted(grads, lam)
        row.update(gradient_statistics(grads, problem.term_names(), keys))
        counts = gradient_histograms(grads, keys)
    products = 0
    for term in hessian_terms:
        op = hessian_operator(backend, problem, params, mu, sigma, batch, lam, term=term, parameter_set=parameter_set,
                              net=settings.method_spec.net, gate=settings.gate, dtype=hessian_dtype)
        eig = largest_eigenvalue(op.matmat, op.n)
        row[f"sigma_max_{term}"] = eig.value
        products += eig.products
    if hessian_terms:
        row["lanczos_products"] = products
    return row, counts, lam


def run_one(experiment: Experiment, plan: RunPlan, out: Path, *, backend: str = "jax", seed: int = 0,
            parameter_set: str = "weights", quiet: bool = False) -> dict[str, Any]:
    """Train ``plan`` with the experiment's schedule and ``seed``, writing its :func:`run_directory` under ``out``.

    Returns:
        The run's summary (also written as ``summary.json``, last, with ``seed``) with its
        ``history`` rows, ``gradients`` record and dense ``spectra``.
    """
    problem = get_problem(plan.problem, **plan.parameters)
    # chunks end on every checkpoint: their length divides the log interval and both diagnostic intervals
    chunk = math.gcd(100, experiment.gradient_every, experiment.hessian_every)
    settings = TrainSettings(method=plan.method, steps=experiment.steps, batch_size=experiment.batch_size, seed=seed,
                             width=experiment.width, depth=experiment.depth, log_every=chunk)
    impl = get_backend(backend)
    start = seed_start(problem, settings)
    params, mu, sigma = start.params, start.mu, start.sigma
    trainer = impl.trainer(problem, settings, impl.resolve_device(settings.device))
    state = trainer.init(params, mu, sigma)
    names = problem.term_names()
    x_test = problem.test_grid()
    ref = problem.reference(x_test)
    fixed = draw_batches(problem, start.batches, 1, settings.batch_size, settings.dtype) if experiment.full_batch else None

    def batches_for(steps: int) -> list[np.ndarray]:
        if fixed is not None:  # full batch: the same points at every step
            return [np.repeat(b, steps, axis=0) for b in fixed]
        return draw_batches(problem, start.batches, steps, settings.batch_size, settings.dtype)

    chunk = min(chunk, settings.steps)
    compile_seconds = trainer.warmup(state, draw_batches(problem, np.random.default_rng(12345), chunk,
                                                         settings.batch_size, settings.dtype))
    run_dir = run_directory(out, plan, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = parameter_keys(params, parameter_set)
    record = GradientRecord(names, tuple(keys), tuple(int(params[k].size) for k in keys))
    history: list[dict[str, Any]] = []
    options = dict(parameter_set=parameter_set, hessian_dtype=experiment.hessian_dtype)

    def diagnose(done: int, batch: list[np.ndarray], row: dict[str, Any]) -> None:
        grads = _due(done, experiment.gradient_every, settings.steps)
        hess = experiment.hessian_terms if _due(done, experiment.hessian_every, settings.steps) else ()
        if grads or hess:
            stats, counts, lam = checkpoint(trainer, state, problem, batch, mu, sigma, settings, backend,
                                            gradients=grads, hessian_terms=hess, **options)
            row.update(stats)
            if counts is not None:
                record.add(done, lam, counts)

    t0, train_seconds, done = time.perf_counter(), 0.0, 0
    first = batches_for(chunk)
    row0: dict[str, Any] = {"step": 0, "seconds": 0.0}
    diagnose(0, [b[0] for b in first], row0)
    history.append(row0)
    while done < settings.steps:
        steps = min(chunk, settings.steps - done)
        batches = [b[:steps] for b in first] if done == 0 else batches_for(steps)
        t1 = time.perf_counter()
        state, output = trainer.train(state, batches, done)
        trainer.sync()
        train_seconds += time.perf_counter() - t1
        done += steps
        row = {"step": done, "seconds": train_seconds,
               **{f"loss_{n}": float(v) for n, v in zip(names, output.losses[-1])},
               **{f"weight_{n}": float(v) for n, v in zip(names, output.weights[-1])}}
        if not np.isfinite(output.losses).all():
            history.append(row)
            break
        pred = trainer.predict(state, x_test, problem.solution_needs)
        row.update(problem.metrics(problem.solution(np, x_test, {k: v.astype(np.float64) for k, v in pred.items()}), ref))
        diagnose(done, [b[-1] for b in batches], row)
        history.append(row)
        if not quiet and done % max(settings.steps // 10, 1) == 0:
            print(f"  {experiment.name} {plan.label} seed {seed}: step {done}/{settings.steps}, "
                  f"{problem.primary_metric} {row[problem.primary_metric]:.3e}", flush=True)

    exported = trainer.export(state)
    replace_atomically(run_dir / PARAMS, lambda f: np.savez(f, **exported, norm_mu=mu, norm_sigma=sigma))
    save_gradients(run_dir, record)
    spectra = {}
    if experiment.spectrum_terms:
        batch = [b[0] for b in batches_for(1)]
        params64 = {k: np.asarray(v, np.float64) for k, v in exported.items() if k != "loss_weights"}
        for term in experiment.spectrum_terms:
            op = hessian_operator(backend, problem, params64, mu, sigma, batch, exported["loss_weights"], term=term,
                                  parameter_set=parameter_set, net=settings.method_spec.net, gate=settings.gate,
                                  dtype=experiment.hessian_dtype)
            spectra[term] = dense_spectrum(op.matmat, op.n)
        replace_atomically(run_dir / "spectra.npz", lambda f: np.savez(f, step=done, **spectra))
    _write_history(run_dir / "history.csv", history)  # last of the files is_complete looks for: the run is done
    summary = {"label": plan.label, "problem": plan.problem, "parameters": plan.parameters, "method": plan.method,
               "seed": seed, "directory": run_dir.name, "steps": done,
               "error": history[-1].get(problem.primary_metric),
               "metric": problem.primary_metric, "train_seconds": train_seconds, "compile_seconds": compile_seconds,
               "wall_seconds": time.perf_counter() - t0}
    write_json(run_dir / "summary.json", summary)
    return {**summary, "history": history, "gradients": record, "spectra": spectra}


def load_run(experiment: Experiment, plan: RunPlan, out: Path, seed: int = 0) -> dict[str, Any]:
    """A finished run of ``plan`` and ``seed`` as :func:`run_one` returned it, read back from its directory."""
    import pandas as pd

    run_dir = run_directory(out, plan, seed)
    if not is_complete(experiment, run_dir):
        raise UsageError(f"{run_dir} holds no finished run; run `gradpath diagnose {experiment.name} --seeds {seed}` "
                         "first")
    frame = pd.read_csv(run_dir / "history.csv")
    history = [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
               for row in frame.to_dict("records")]
    problem = get_problem(plan.problem, **plan.parameters)
    summary = {"label": plan.label, "problem": plan.problem, "parameters": plan.parameters, "method": plan.method,
               "seed": seed, "directory": run_dir.name, "steps": int(frame["step"].iloc[-1]),
               "error": history[-1].get(problem.primary_metric), "metric": problem.primary_metric,
               "train_seconds": float(frame["seconds"].iloc[-1]), "compile_seconds": None, "wall_seconds": None}
    if (run_dir / "summary.json").is_file():
        summary.update(json.loads((run_dir / "summary.json").read_text()))
    elif (out / "numbers.json").is_file():  # records written before runs kept a summary of their own
        earlier = json.loads((out / "numbers.json").read_text())
        recorded = next((r for r in earlier.get("runs", []) if r.get("label") == plan.label
                         and r.get("seed", earlier.get("seed", 0)) == seed), None)
        if recorded is not None:
            summary.update(recorded, seed=seed, directory=run_dir.name)
            # kept beside the run from now on: the next numbers.json may leave this seed out
            write_json(run_dir / "summary.json", summary)
    spectra = {}
    if (run_dir / "spectra.npz").is_file():
        with np.load(run_dir / "spectra.npz") as data:
            spectra = {t: data[t] for t in experiment.spectrum_terms if t in data}
    return {**summary, "history": history, "gradients": load_gradients(run_dir), "spectra": spectra}


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows with different columns (diagnostics only at checkpoints) in one CSV, blanks where absent; atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    replace_atomically(path, lambda f: f.write(text.getvalue().encode()))


def _check_steps(experiment: Experiment, result: dict[str, Any], run_dir: Path) -> None:
    """Refuse a stored run trained for another number of steps (one that stopped on a non-finite loss is kept)."""
    last = result["history"][-1]
    diverged = any(not math.isfinite(v) for k, v in last.items() if k.startswith("loss_"))
    if result["steps"] != experiment.steps and not diverged:
        raise UsageError(f"{run_dir} holds a run of {result['steps']} steps, not {experiment.steps}; "
                         "pass the same --steps or another --out")


def run_experiment(name: str, *, backend: str = "jax", out: str | Path | None = None, steps: int | None = None,
                   seeds: Sequence[int] | None = None, parameter_set: str = "weights", quiet: bool = False,
                   report_only: bool = False) -> Path:
    """Run a preset for each seed and write its runs, figures, ``numbers.json`` and README.md.

    A run whose directory is already complete is read back, not trained again (resuming an
    interrupted preset). With ``report_only`` nothing is trained: the report is rebuilt from the
    seeds whose runs are all complete, and the others are named in it as missing.

    Args:
        seeds: the seeds to run (default: the preset's ``seeds``).

    Returns:
        The output directory.
    """
    from gradpath.suite.diagnostics.report import write_report  # plotting only when a report is written

    experiment = get_experiment(name)
    if parameter_set not in PARAMETER_SETS:
        raise unknown_choice("parameter set", parameter_set, PARAMETER_SETS)
    if steps is not None:
        require_positive("--steps", steps)
        experiment = replace(experiment, steps=steps, gradient_every=min(experiment.gradient_every, steps),
                             hessian_every=min(experiment.hessian_every, steps))
    seeds = list(experiment.seeds if seeds is None else seeds)
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds must be distinct non-negative integers, got {seeds}")
    out = Path(out or f"results/diagnostics/{name}")
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    missing: list[int] = []
    for seed in seeds:
        dirs = [run_directory(out, plan, seed) for plan in experiment.runs]
        if report_only and not all(is_complete(experiment, d) for d in dirs):
            missing.append(seed)
            continue
        for plan, run_dir in zip(experiment.runs, dirs):
            if is_complete(experiment, run_dir):
                result = load_run(experiment, plan, out, seed)
                _check_steps(experiment, result, run_dir)
                if not quiet and not report_only:
                    print(f"{experiment.name}: {plan.label} seed {seed} is complete in {run_dir}, not trained again",
                          flush=True)
            else:
                if not quiet:
                    print(f"{experiment.name}: training {plan.label} seed {seed} ({plan.problem} {plan.method}, "
                          f"{experiment.steps} steps, {backend})", flush=True)
                result = run_one(experiment, plan, out, backend=backend, seed=seed, parameter_set=parameter_set,
                                 quiet=quiet)
            results.append(result)
    if not results:
        raise UsageError(f"{out} holds no complete run of {name} for seeds {', '.join(map(str, seeds))}; "
                         f"run `gradpath diagnose {name}` first")
    write_report(experiment, results, out, backend=backend, seeds=[s for s in seeds if s not in missing],
                 missing_seeds=missing, parameter_set=parameter_set)
    return out
