"""Gradient-pathology experiments of the paper as presets: ``gradpath diagnose fig3|fig4|fig5|fig11``
(the command itself: :mod:`gradpath.suite.diagnostics.command`).

Each preset (:data:`EXPERIMENTS`, data only) trains one or more runs with the paper's settings
through the one training loop (:func:`gradpath.backends.training.train_seeds`, by way of
:func:`gradpath.suite.runs.job.train_runs`, as a campaign job does), with the gradient record and
a :class:`HessianProbe` at chosen steps: the per-layer gradient statistics and histograms of every
loss term and the largest Hessian eigenvalue sigma_max of the total loss and of each term
(gradpath.backends.diagnostics). Each run is an ordinary run record (config.json, manifest.json,
summary.json with its status, history.csv, gradients.npz, params.npz, and a checkpoint while it
trains) under ``--out`` (default ``results/diagnostics/<preset>``), in the directory
:func:`run_directory` names, plus ``spectra.npz`` where dense spectra were taken. Beside them go
the figures (PNG), ``numbers.json`` and a README.md with the measured ratios beside the paper's claims.

Seeds are data: a preset runs every seed of ``Experiment.seeds`` (or those asked for), and a seed
whose run directory is complete (:func:`is_complete`) is read back instead of trained again; an
interrupted run goes on from its checkpoint, so an interrupted preset resumes and more seeds can
be added later. Runs recorded before the records had config and summary (results/diagnostics/)
are read as they are.

- ``fig3``: 1-D Poisson, C = 1, 2, 4, M1: per-layer histograms of grad L_r and grad L_ub (Fig. 3).
- ``fig4``: Helmholtz (a2 = 4), M1, full batch: all eigenvalues of the Hessians of L_r and L_ub
  at the end (Fig. 4a) and the loss curves (Fig. 4b).
- ``fig5``: Helmholtz, M1, stiff a2 = 4 vs non-stiff a2 = 1: sigma_max over training (Fig. 5);
  the stiff run's histograms are Fig. 2. Seeds 0-4.
- ``fig11``: Helmholtz (a2 = 4), M1 vs M3: sigma_max over training (Fig. 11). Seeds 0-4.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gradpath.backends.data import draw_batches, seed_start
from gradpath.backends.diagnostics import PARAMETER_SETS, dense_spectrum, hessian_operator, largest_eigenvalue
from gradpath.backends.settings import TrainSettings
from gradpath.backends.training import ProbeContext, log_interval
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError, require_positive, unknown_choice
from gradpath.suite.runs import job
from gradpath.suite.runs.job import TrainOptions, train_runs
from gradpath.suite.runs.record import (CONFIG, DONE, GRADIENTS, PARAMS, SUMMARY, config_hash, load_checkpoint,
                                        load_gradients, read_status, replace_atomically, write_json)
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.runs.store import Store


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
        gradient_every: steps between gradient records (also at step 0 and the last step).
        hessian_every: steps between sigma_max probes (0: none).
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
EXPERIMENTS: dict[str, Experiment] = {
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
    if name not in EXPERIMENTS:
        raise unknown_choice("diagnostics preset", name, EXPERIMENTS)
    return EXPERIMENTS[name]


def run_directory(out: Path, plan: RunPlan, seed: int) -> Path:
    """Where the run of ``plan`` with ``seed`` lives under ``out``.

    ``<label>`` (``=`` written as ``-``) for seed 0 and ``<label>-seed-<N>`` for the others: seed 0
    keeps the directory it had before presets ran several seeds, so runs recorded then stay valid.
    """
    name = plan.label.replace("=", "-")
    return Path(out) / (name if seed == 0 else f"{name}-seed-{seed}")


def is_complete(experiment: Experiment, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run, with its dense spectra where the preset takes them.

    A run record is finished once its summary says ``complete`` or ``diverged``; one recorded before
    runs had a config (no config.json) once its files are all there (they were written whole at
    the end, ``history.csv`` last).
    """
    files = ["history.csv", GRADIENTS, PARAMS] + (["spectra.npz"] if experiment.spectrum_terms else [])
    return _trained(run_dir) and all((run_dir / f).is_file() for f in files)


def _trained(run_dir: Path) -> bool:
    """Whether training in ``run_dir`` has ended (the spectra may still be missing)."""
    if (run_dir / CONFIG).is_file():
        return read_status(run_dir) in DONE
    return all((run_dir / f).is_file() for f in ("history.csv", GRADIENTS, PARAMS))


@dataclass(frozen=True)
class HessianProbe:
    """sigma_max (Lanczos) of the Hessian of each loss in ``terms`` on the step's batch, a training probe
    (:class:`gradpath.backends.training.Probe`) every ``every`` steps.

    Columns: ``sigma_max_<loss>`` per loss and ``lanczos_products`` (Hessian-vector products in total).
    """

    every: int
    terms: tuple[str, ...]
    backend: str
    parameter_set: str = "weights"
    dtype: str = "float64"

    @property
    def columns(self) -> tuple[str, ...]:
        return (*(f"sigma_max_{t}" for t in self.terms), "lanczos_products")

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        exported = context.trainer.export(context.state)
        if context.lane is not None:
            exported = {k: v[context.lane] for k, v in exported.items()}
        lam = np.asarray(exported["loss_weights"], np.float64)
        params = {k: np.asarray(v, np.float64) for k, v in exported.items() if k != "loss_weights"}
        return sigma_max_row(self.backend, context.problem, params, context.mu, context.sigma, context.batch, lam,
                     context.settings, terms=self.terms, parameter_set=self.parameter_set, dtype=self.dtype)


def sigma_max_row(backend: str, problem: Any, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray,
          batch: list[np.ndarray], lam: np.ndarray, settings: TrainSettings, *, terms: Sequence[str],
          parameter_set: str = "weights", dtype: str = "float64") -> dict[str, float]:
    """sigma_max of each loss in ``terms`` of the network ``params`` on one step's ``batch`` (history columns
    ``sigma_max_<loss>``, and ``lanczos_products`` in total)."""
    row: dict[str, float] = {}
    products = 0
    for term in terms:
        op = hessian_operator(backend, problem, params, mu, sigma, batch, lam, term=term, parameter_set=parameter_set,
                              net=settings.method_spec.net, gate=settings.gate, dtype=dtype)
        eig = largest_eigenvalue(op.matmat, op.n)
        row[f"sigma_max_{term}"] = eig.value
        products += eig.products
    row["lanczos_products"] = products
    return row


def run_spec(experiment: Experiment, plan: RunPlan, *, backend: str = "jax", seed: int = 0,
             parameter_set: str = "weights") -> RunSpec:
    """The run record of ``plan`` with ``seed``: its settings, and a config that also names what is diagnosed.

    Chunks end on every step a record is due: the log interval divides both diagnostic intervals.
    """
    problem = get_problem(plan.problem, **plan.parameters)
    given = dict(method=plan.method, steps=experiment.steps, batch_size=experiment.batch_size, seed=seed,
                 width=experiment.width, depth=experiment.depth,
                 log_every=log_interval(100, experiment.gradient_every, experiment.hessian_every))
    diagnosed = {"preset": experiment.name, "label": plan.label, "gradient_every": experiment.gradient_every,
                 "hessian_every": experiment.hessian_every, "hessian_terms": list(experiment.hessian_terms),
                 "spectrum_terms": list(experiment.spectrum_terms), "full_batch": experiment.full_batch,
                 "hessian_dtype": experiment.hessian_dtype, "parameter_set": parameter_set}
    config = {"problem": plan.problem, "parameters": problem.parameters(), "backend": backend,
              "settings": TrainSettings(**given).resolved(problem), "diagnostics": diagnosed}
    return RunSpec(problem=plan.problem, parameters=problem.parameters(), backend=backend, settings=given,
                   config=config, key=config_hash(config), name=run_directory(Path("."), plan, seed).name)


def train_plan(experiment: Experiment, plan: RunPlan, out: Path, *, backend: str = "jax", seed: int = 0,
            parameter_set: str = "weights", quiet: bool = False, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Train ``plan`` with the experiment's schedule and ``seed`` into its :func:`run_directory` under ``out``
    (going on from its checkpoint, if an earlier process left one), then take its dense spectra.

    Returns:
        The run as :func:`load_run` reads it back: its summary with ``history`` rows, ``gradients``
        record and dense ``spectra``.

    Raises:
        UsageError: another process is training this run.
    """
    spec = run_spec(experiment, plan, backend=backend, seed=seed, parameter_set=parameter_set)
    store = Store(out, option="--out")
    run_dir = store.path(spec)
    settings = spec.train_settings()
    with store.lock(spec, timeout=0) as held:
        if not held:
            raise UsageError(f"another process is training {run_dir}; wait for it to finish, or choose another --out")
        if not _trained(run_dir):
            store.clean(spec)
            (run_dir / "spectra.npz").unlink(missing_ok=True)  # of an earlier network
            checkpoint = load_checkpoint(run_dir)
            metric = get_problem(plan.problem, **plan.parameters).primary_metric
            every = max(settings.steps // 10, 1)

            def report(_: int, row: dict[str, Any]) -> None:
                if not quiet and row["step"] > 0 and row["step"] % every == 0:
                    print(f"  {experiment.name} {plan.label} seed {seed}: step {row['step']}/{settings.steps}, "
                          f"{metric} {row[metric]:.3e}", flush=True)

            hessian = [HessianProbe(experiment.hessian_every, tuple(experiment.hessian_terms), backend, parameter_set,
                                    experiment.hessian_dtype)] if experiment.hessian_every > 0 else []
            # a checkpoint as often as a campaign job's (read now: a test may shorten it)
            options = TrainOptions(gradient_every=experiment.gradient_every, checkpoint_every=job.CHECKPOINT_EVERY,
                                   on_row=report, reraise=True,
                                   probes=hessian, probe_at_start=True, full_batch=experiment.full_batch,
                                   gradient_parameters=parameter_set)
            train_runs([spec], store, list(argv), None if checkpoint is None else [checkpoint], options)
            summary = json.loads((run_dir / SUMMARY).read_text())
            write_json(run_dir / SUMMARY, {**summary, "label": plan.label, "problem": plan.problem,
                                           "parameters": plan.parameters, "method": plan.method, "seed": seed,
                                           "directory": run_dir.name})
        if experiment.spectrum_terms and not (run_dir / "spectra.npz").is_file():
            _take_spectra(experiment, plan, run_dir, settings, backend, parameter_set)
    return load_run(experiment, plan, out, seed)


def _take_spectra(experiment: Experiment, plan: RunPlan, run_dir: Path, settings: TrainSettings, backend: str,
                  parameter_set: str) -> None:
    """The dense spectra of the trained network's Hessians (``spectrum_terms``) on the seed's first batch
    (the full batch's points), into ``spectra.npz``."""
    problem = get_problem(plan.problem, **plan.parameters)
    with np.load(run_dir / PARAMS) as saved:
        params = {k: saved[k] for k in saved.files}
    mu, sigma, lam = params.pop("norm_mu"), params.pop("norm_sigma"), params.pop("loss_weights")
    params64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    start = seed_start(problem, settings)
    batch = [b[0] for b in draw_batches(problem, start.batches, 1, settings.batch_size, settings.dtype)]
    spectra = {}
    for term in experiment.spectrum_terms:
        op = hessian_operator(backend, problem, params64, mu, sigma, batch, lam, term=term,
                              parameter_set=parameter_set, net=settings.method_spec.net, gate=settings.gate,
                              dtype=experiment.hessian_dtype)
        spectra[term] = dense_spectrum(op.matmat, op.n)
    step = json.loads((run_dir / SUMMARY).read_text())["steps"]
    replace_atomically(run_dir / "spectra.npz", lambda f: np.savez(f, step=step, **spectra))


def load_run(experiment: Experiment, plan: RunPlan, out: Path, seed: int = 0) -> dict[str, Any]:
    """A finished run of ``plan`` and ``seed`` as :func:`train_plan` returned it, read back from its directory."""
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


def _check_steps(experiment: Experiment, result: dict[str, Any], run_dir: Path) -> None:
    """Refuse a stored run trained for another number of steps (one that stopped on a non-finite loss is kept)."""
    last = result["history"][-1]
    diverged = any(not math.isfinite(v) for k, v in last.items() if k.startswith("loss_"))
    if result["steps"] != experiment.steps and not diverged:
        raise UsageError(f"{run_dir} holds a run of {result['steps']} steps, not {experiment.steps}; "
                         "pass the same --steps or another --out")


def run_experiment(name: str, *, backend: str = "jax", out: str | Path | None = None, steps: int | None = None,
                   seeds: Sequence[int] | None = None, parameter_set: str = "weights", quiet: bool = False,
                   report_only: bool = False, argv: Sequence[str] = ()) -> Path:
    """Run a preset for each seed and write its runs, figures, ``numbers.json`` and README.md.

    A run whose directory is already complete is read back, not trained again (resuming an
    interrupted preset). With ``report_only`` nothing is trained: the report is rebuilt from the
    seeds whose runs are all complete, and the others are named in it as missing.

    Args:
        seeds: the seeds to run (default: the preset's ``seeds``).
        argv: the command line, for the runs' manifests.

    Returns:
        The output directory.
    """
    from gradpath.suite.diagnostics.report import write_diagnostics_report  # plotting only when a report is written

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
                result = train_plan(experiment, plan, out, backend=backend, seed=seed, parameter_set=parameter_set,
                                    quiet=quiet, argv=argv)
            results.append(result)
    if not results:
        raise UsageError(f"{out} holds no complete run of {name} for seeds {', '.join(map(str, seeds))}; "
                         f"run `gradpath diagnose {name}` first")
    write_diagnostics_report(experiment, results, out, backend=backend, seeds=[s for s in seeds if s not in missing],
                             missing_seeds=missing, parameter_set=parameter_set)
    return out
