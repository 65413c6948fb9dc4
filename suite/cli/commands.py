"""The ``gradpath`` command: ``list`` what can be run, ``run`` one training and record it, ``campaign`` runs
many into a store, ``reproduce`` runs a preset and writes its tables and report, ``report`` rebuilds those,
``restore`` rebuilds a store's records from the tables a report wrote.

Exit codes (:data:`EXIT_CODES`): 0 success; 1 the run diverged (``run``) or some run failed
(``campaign``, ``reproduce``); 2 a usage error (one line on stderr, no traceback), a run too large
for this machine's memory included; 3 memory ran out while training (``run``; recorded as
``failed``); 130 interrupted (Ctrl-C or SIGTERM). Only :func:`main` turns a :class:`UsageError`
into that line, so a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gradpath.backends import get_backend
from gradpath.backends.checkpoint import CheckpointMismatch
from gradpath.backends.settings import COMPILE_CHOICES, TrainSettings
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError
from gradpath.suite.perf.bench import add_bench_command
from gradpath.suite.cli.cache import add_cache_command
from gradpath.suite.cli.analyse import add_analyse_command
from gradpath.suite.campaigns.definition import Plan, Waiting, load_campaign, plan
from gradpath.suite.runs.spec import RunSpec
from gradpath.suite.campaigns.schedule import CampaignResult, DEFAULT_LANES, run_campaign
from gradpath.suite.runs.job import CHECKPOINT_EVERY, TrainOptions, train_runs
from gradpath.suite.campaigns.executors import EXECUTORS, make_executor
from gradpath.suite.cli.listing import listing
from gradpath.suite.campaigns.presets import PRESETS
from gradpath.suite.runs.progress import Progress
from gradpath.suite.diagnostics.command import add_diagnose_command
from gradpath.suite.cli.reference import add_reference_command
from gradpath.suite.runs.record import (CHECKPOINT, DONE, SUMMARY, load_checkpoint, read_status,
                                        writable_directory)
from gradpath.suite.runs.recording import terminate_as_interrupt
from gradpath.suite.runs.resources import check_memory, is_out_of_memory
from gradpath.suite.runs.frozen import frozen_settings, make_spec
from gradpath.suite.runs.store import DEFAULT_STORE, Store, gather, write_run_tables

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_OUT_OF_MEMORY, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = {EXIT_OK: "success", EXIT_FAILED: "the run diverged, or a campaign run failed",
              EXIT_USAGE: "usage error", EXIT_OUT_OF_MEMORY: "memory ran out while training",
              EXIT_INTERRUPTED: "interrupted (Ctrl-C or SIGTERM)"}
# where `gradpath reproduce` and `report` write a campaign's tables unless --out says otherwise: not
# results/, whose directories hold the project's published results under version control
RESULTS_OUT = "gradpath-results"


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


# TrainSettings field -> (flags, type, metavar, help); defaults come from TrainSettings itself
SETTING_OPTIONS: dict[str, tuple[tuple[str, ...], Any, str, str]] = {
    "method": (("--method",), str, "M", "M1-M4, see `gradpath list`"),
    "seed": (("--seed",), int, "N", "fixes weights, input normalisation and batches"),
    "steps": (("--iterations", "--steps"), int, "N", "Adam steps"),
    "width": (("--width",), int, "N", "hidden-layer width (default: the problem's)"),
    "depth": (("--depth",), int, "N", "number of hidden layers (default: the problem's)"),
    "batch_size": (("--batch-size",), int, "N", "points drawn per region and step"),
    "lr": (("--lr",), _finite_float, "X", "initial learning rate"),
    "lr_decay_rate": (("--lr-decay-rate",), _finite_float, "X", "schedule lr * rate^(step / decay-steps)"),
    "lr_decay_steps": (("--lr-decay-steps",), int, "N", "steps per factor of the decay rate"),
    "log_every": (("--log-every",), int, "N", "steps between history rows"),
    "anneal_every": (("--anneal-every",), int, "N", "steps between loss-weight updates (M2/M4)"),
    "anneal_alpha": (("--anneal-alpha",), _finite_float, "X",
                     "EMA weight of the new loss-weight estimate (default: the variant's)"),
    "weighting": (("--weighting",), str, "NAME", "loss-weight annealing variant (default: the problem's)"),
    "gate": (("--gate",), str, "NAME", "gated-network form for M3/M4"),
    "adam_form": (("--adam-form",), str, "NAME", "standard or tf1 (where Adam's epsilon enters)"),
    "adam_eps": (("--adam-eps",), _finite_float, "X", "Adam's epsilon"),
    "dtype": (("--dtype",), str, "NAME", "float32 or float64"),
    "device": (("--device",), str, "NAME", "auto, cpu or cuda"),
}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainSettings)}


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else an error that says what is wanted."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {what} integer, got {value}")
        return value

    return parse


_non_negative_int = _int_at_least(0, "non-negative")
_positive_int = _int_at_least(1, "positive")


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {value:g}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with errors in gradpath's one-line form (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"gradpath: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gradpath``; each subcommand sets ``command``."""
    parser = _Parser(prog="gradpath", description="Reproduce and benchmark PINN training (Wang, Teng & Perdikaris 2021).",
                     epilog="exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()))
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    commands.add_parser("list", help="problems, backends, methods and option values").set_defaults(command=cmd_list)

    run = commands.add_parser(
        "run", help="train one PINN and record it",
        description="Train one PINN and write its record to OUT/<problem>-<method>-<backend>-s<seed>-<hash>/. "
                    "Defaults are the paper's settings.")
    run.set_defaults(command=cmd_run)
    run.add_argument("problem", metavar="PROBLEM", help="a problem name, see `gradpath list`")
    run.add_argument("--backend", default="jax", metavar="NAME", help="jax or torch (default: jax)")
    for name, (flags, kind, metavar, text) in SETTING_OPTIONS.items():
        if DEFAULTS[name] is not None:
            text += f" (default: {DEFAULTS[name]})"
        run.add_argument(*flags, dest=name, type=kind, metavar=metavar, help=text, default=argparse.SUPPRESS)
    run.add_argument("--compile", dest="compile", choices=COMPILE_CHOICES, default=argparse.SUPPRESS,
                     help="torch: compile the step with inductor (on), run it eagerly (off: same maths, no "
                          "compile time, slower steps), or compile when the run is long enough to repay it "
                          "(auto); jax always compiles (default: auto)")
    run.add_argument("--no-compile", dest="compile", action="store_const", const="off", default=argparse.SUPPRESS,
                     help="the same as --compile off")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="a problem parameter, e.g. --param a2=1 (repeatable)")
    run.add_argument("--loss-weight", dest="loss_weight", action="append", default=[], metavar="TERM=VALUE",
                     help="a loss term's weight, e.g. --loss-weight boundary=10 (repeatable; terms not named keep "
                          "1): held constant for M1/M3, the initial lambda for M2/M4")
    run.add_argument("--loss-weight-from", dest="loss_weight_from", metavar="STORE",
                     help="M1/M3: hold each term's weight at the final lambda of the M2/M4 run with the same "
                          "options and seed, complete in STORE (--weighting/--anneal-* choose that run's)")
    run.add_argument("--form", metavar="NAME", help="cavity formulation: psi-p (default) or u-v-p; "
                     "the same as --param form=NAME")
    run.add_argument("--out", default="runs", metavar="DIR",
                     help="directory of run records, e.g. a campaign's store (default: runs)")
    run.add_argument("--force", action="store_true",
                     help="overwrite a done (complete or diverged) run with the same configuration, or start an "
                          "unfinished one afresh "
                          "instead of going on from its checkpoint")
    run.add_argument("--checkpoint-every", type=_non_negative_float, default=CHECKPOINT_EVERY, metavar="SECONDS",
                     help="wall-clock seconds between checkpoints (checkpoint.npz, removed once the run is done); "
                          "rerunning a stopped run goes on from its last one; 0: none "
                          f"(default: {CHECKPOINT_EVERY:g})")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    # not a TrainSettings field: recording gradients does not change the run, so not its config hash either
    run.add_argument("--gradient-every", type=_non_negative_int, default=10000, metavar="N",
                     help="steps between records of each loss term's per-layer gradient statistics (history) and "
                          "histograms (gradients.npz); 0: none (default: 10000, as the authors' code)")
    _add_campaign_commands(commands)
    add_reference_command(commands, _finite_float)
    add_diagnose_command(commands)
    add_bench_command(commands, _positive_int, load_campaign=_campaign_runs)
    add_cache_command(commands)
    add_analyse_command(commands)
    commands.metavar = "{" + ",".join(commands.choices) + "}"  # the usage line lists every command
    return parser


def _add_campaign_commands(commands) -> None:
    campaign = commands.add_parser(
        "campaign", help="run every run of a preset or campaign file into a results store",
        description="Run the cartesian product a campaign describes (a preset name or a TOML file), each run in "
                    "its own process, skipping runs the store holds as complete or diverged and redoing the rest. "
                    "Writes runs.parquet, runs.csv and history.parquet of the whole store into it. "
                    "SIGTERM stops it as Ctrl-C does.")
    campaign.set_defaults(command=cmd_campaign)
    campaign.add_argument("source", metavar="PRESET_OR_TOML", help=f"a preset ({', '.join(PRESETS)}) "
                          "or a campaign .toml file")
    campaign.add_argument("--dry-run", action="store_true", help="list the runs and which are done; train nothing")
    reproduce = commands.add_parser(
        "reproduce", help="run a preset and write its tables and REPORT.md",
        description=f"Run a preset (as `gradpath campaign`), then write {RESULTS_OUT}/<preset>/ (--out DIR for "
                    "another; results/<preset>/ holds the project's published results): runs.csv, runs.parquet, "
                    "history.parquet, the paper's tables as csv/md/tex and REPORT.md with the paper's values beside ours.")
    reproduce.set_defaults(command=cmd_reproduce)
    report = commands.add_parser(
        "report", help="rebuild a preset's tables and REPORT.md from the store, without training",
        description=f"Write {RESULTS_OUT}/<preset>/ (--out DIR for another, e.g. results/<preset> to rebuild "
                    "the published report) from the runs the store holds; missing runs are listed as missing.")
    report.set_defaults(command=cmd_report)
    restore = commands.add_parser(
        "restore", help="rebuild a store's records of a preset from the tables a report published",
        description="Write into the store a record of every run of the preset that RESULTS (a directory "
                    "`gradpath report` wrote: runs.parquet, history.parquet) lists as complete or diverged, "
                    "unless the store holds it done or another process is training it. A campaign then trains "
                    "only the runs that are left.")
    restore.set_defaults(command=cmd_restore)
    restore.add_argument("--from", dest="results", metavar="RESULTS",
                         help="results directory to restore from (default: results/<campaign name>)")
    for sub in (reproduce, report, restore):
        sub.add_argument("--preset", required=True, metavar="NAME", help="a preset or a campaign .toml file")
    for sub in (reproduce, report):
        sub.add_argument("--out", metavar="DIR", help=f"results directory (default: {RESULTS_OUT}/<campaign name>)")
    for sub in (campaign, reproduce, report, restore):
        sub.add_argument("--store", default=DEFAULT_STORE, metavar="DIR",
                         help=f"results store directory (default: {DEFAULT_STORE})")
    for sub in (campaign, reproduce):
        sub.add_argument("--jobs", type=_positive_int, metavar="N",
                         help="jobs at once on this machine (default: the number of CPUs)")
        sub.add_argument("--lanes", type=_positive_int, default=DEFAULT_LANES, metavar="N",
                         help="train up to N runs that differ only in their seed as one vectorised job "
                              f"(default: {DEFAULT_LANES}; 1: every run in a job of its own)")
        sub.add_argument("--executor", default="local", choices=EXECUTORS,
                         help="local processes (default), a dask scheduler, or a local dask cluster")
        sub.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler address, e.g. tcp://HOST:8786")
        sub.add_argument("--workers", type=_positive_int, metavar="N", help="dask-local: number of workers")
        sub.add_argument("--quiet", action="store_true", help="no progress bar or per-run lines")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--param {text!r}: not KEY=VALUE; write e.g. --param a2=1")
    return key, value


def _loss_weights(items: Sequence[str]) -> dict[str, float]:
    """``--loss-weight TERM=VALUE`` options as {term: weight}; a UsageError names the form."""
    out: dict[str, float] = {}
    for text in items:
        term, sep, value = text.partition("=")
        try:
            weight = float(value) if sep and term else None
        except ValueError:
            weight = None
        if weight is None:
            raise UsageError(f"--loss-weight {text!r}: not TERM=VALUE with a number; "
                             "write e.g. --loss-weight boundary=10")
        if term in out:
            raise UsageError(f"--loss-weight names term {term!r} twice; give each term once")
        out[term] = weight
    return out


def _first_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, its first line only (messages stay one line)."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _non_finite_loss(row: dict[str, Any]) -> str:
    bad = [f"{k} is {v}" for k, v in row.items() if k.startswith("loss_") and not math.isfinite(v)]
    return ", ".join(bad) or "a loss is not finite"


def cmd_list(args: argparse.Namespace, argv: Sequence[str]) -> int:
    print(listing())
    return 0


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    params = dict(map(_key_value, args.param))
    if args.form is not None:
        params["form"] = args.form
    problem = get_problem(args.problem, **params)
    names = [*SETTING_OPTIONS, "compile"]
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    if args.loss_weight:
        given["loss_weights"] = _loss_weights(args.loss_weight)
    if args.loss_weight_from is not None:
        if args.loss_weight:
            raise UsageError("--loss-weight and --loss-weight-from both set the loss weights; keep one")
        # the annealing options name the partner run's; the frozen run itself does not anneal
        given, partner = frozen_settings(Store(args.loss_weight_from, create=False, option="--loss-weight-from"),
                                         args.problem, problem, args.backend, given)
        shown = ", ".join(f"{k}={v:.6g}" for k, v in given["loss_weights"].items())
        print(f"gradpath: loss weights frozen at the final lambdas of {partner.name}: {shown}", file=sys.stderr)
    settings = TrainSettings(**given)
    device = get_backend(args.backend).resolve_device(settings.device)
    spec = make_spec(args.problem, problem, args.backend, given)
    # every check that can refuse the run comes before the store and the record exist, so that a
    # refused run leaves nothing behind: the memory it needs, and its reference solution (computed,
    # and for the cavity cached, here: a case that does not converge is refused, not a failed run)
    check_memory(problem, settings, args.backend, device)
    problem.reference(problem.test_grid())
    store = Store(args.out, option="--out")
    # the store's lock, as campaign workers take it: two processes must never write one run directory
    with store.lock(spec, timeout=0) as held:
        if not held:
            raise UsageError(f"another process (a campaign job or another `gradpath run`) is training {spec.name} "
                             f"in {args.out}; wait for it to finish, or choose another --out")
        return _run_locked(args, spec, store, argv, problem.primary_metric)


def _run_locked(args: argparse.Namespace, spec: RunSpec, store: Store, argv: Sequence[str], metric: str) -> int:
    """``gradpath run`` once it holds the run's lock: refuse a done run, go on from a checkpoint or start,
    and train it as a campaign job trains its runs (:func:`gradpath.suite.runs.job.train_runs`)."""
    path = store.path(spec)
    status = read_status(path)
    if not args.force and status in DONE:
        raise UsageError(f"run directory {path} already holds a {status} run; pass --force to overwrite")
    checkpoint = None if args.force else load_checkpoint(path)
    if checkpoint is not None and not args.quiet:
        print(f"gradpath: going on from the checkpoint at step {checkpoint.step} in {path} "
              "(--force starts afresh)", file=sys.stderr)
    settings = spec.train_settings()
    progress = [Progress(settings.steps, metric, quiet=args.quiet)]

    def restart(exc: CheckpointMismatch) -> None:
        print(f"gradpath: {exc}; starting afresh", file=sys.stderr)
        progress[0].close()  # the rows start again from the first
        progress[0] = Progress(settings.steps, metric, quiet=args.quiet)

    options = TrainOptions(gradient_every=args.gradient_every, checkpoint_every=args.checkpoint_every or None,
                           on_row=lambda _, row: progress[0].update(row), on_restart=restart, reraise=True)
    try:
        _, results = train_runs([spec], store, list(argv), None if checkpoint is None else [checkpoint], options)
    except KeyboardInterrupt:
        kept = " and its last checkpoint" if (path / CHECKPOINT).exists() else ""
        print(f"gradpath: interrupted; what was logged{kept} is kept in {path}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        # the estimate let it start, yet memory ran out: others took memory meanwhile, or the estimate is low
        print(f"gradpath: error: out of memory while training ({_first_line(exc)}); recorded as failed in "
              f"{path / SUMMARY}; lower --batch-size, --width or --depth, or free memory", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    finally:
        progress[0].close()

    (result,) = results
    summary = result.summary
    if summary["diverged"]:
        print(f"gradpath: error: run diverged at step {summary['diverged_at_step']}: "
              f"{_non_finite_loss(result.history[-1])}; recorded in {path / SUMMARY}", file=sys.stderr)
        return EXIT_FAILED
    route = (result.compilation or {}).get("route")
    print(f"{args.problem} {settings.method} {args.backend} seed {settings.seed}: {summary['metric']} "
          f"{summary['error']:.3e} after {summary['steps']} steps, {summary['ms_per_step']:.3g} ms/step"
          f"{f' ({route})' if route else ''}, compile {summary['compile_seconds']:.1f} s; record in {path}")
    return 0


def _plan(source: str, store: Store | None = None) -> tuple[Any, Plan]:
    """The campaign ``source`` names and its runs, frozen-weights runs resolved against ``store``."""
    campaign = load_campaign(source)
    return campaign, plan(campaign, store)


def _campaign_runs(source: str, store: str | None) -> tuple[str, list[RunSpec]]:
    """``gradpath bench --campaign``'s loader: the campaign's name and runs (frozen ones against ``store``)."""
    campaign, planned = _plan(source, Store(store, create=False, option="--store") if store else None)
    return campaign.name, planned.specs


def _print_waiting(waiting: Sequence[Waiting]) -> None:
    for entry in waiting:
        print(f"gradpath: waiting: {entry.name} (frozen weights): {entry.reason}", file=sys.stderr)


def _run(args: argparse.Namespace, argv: Sequence[str]) -> tuple[Any, list[RunSpec], Store, CampaignResult]:
    """Load, expand and run a campaign; then write the store's runs and history tables.

    Frozen-weights runs whose annealed partner was not complete are planned again once the first
    runs are done, and those whose partner completed meanwhile run then; the rest stay waiting.
    """
    store = Store(args.store)
    campaign, planned = _plan(args.source if hasattr(args, "source") else args.preset, store)
    specs = planned.specs
    executor = make_executor(args.executor, jobs=args.jobs, scheduler=args.scheduler, workers=args.workers)
    try:
        result = run_campaign(specs, store, executor, argv=argv, quiet=args.quiet, lanes=args.lanes)
        if planned.waiting:
            planned = plan(campaign, store)  # partners trained just now give their final weights
            seen = {spec.key for spec in specs}
            later = [spec for spec in planned.specs if spec.key not in seen]
            if later:
                more = run_campaign(later, store, executor, argv=argv, quiet=args.quiet, lanes=args.lanes)
                result.planned += more.planned
                result.already += more.already
                result.counts.update(more.counts)
                result.outcomes.extend(more.outcomes)
                specs = [*specs, *later]
    finally:
        executor.close()
    runs, history = gather(store)
    write_run_tables(store.root, runs, history)
    _print_waiting(planned.waiting)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items())) or "nothing to run"
    waits = f", {len(planned.waiting)} waiting for their annealed run" if planned.waiting else ""
    print(f"campaign {campaign.name}: {result.planned} runs{waits}, {result.already} already done; this time: "
          f"{counts}; store {store.root} (runs.parquet, runs.csv, history.parquet)")
    return campaign, specs, store, result


def cmd_campaign(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.dry_run:
        store = Store(args.store, create=False)
        campaign, planned = _plan(args.source, store)
        specs = planned.specs
        states = [store.state(spec) for spec in specs]
        for spec, state in zip(specs, states):
            what = {"missing": "to run"}.get(state.status, "done" if state.done else f"redo ({state.status}"
                                             + (f": {state.reason})" if state.reason else ")"))
            print(f"{what:<10} {spec.name}")
        for entry in planned.waiting:
            print(f"{'waiting':<10} {entry.name} (frozen at the final weights of {entry.partner.name})")
        done = sum(s.done for s in states)
        waits = f", {len(planned.waiting)} waiting for their annealed run" if planned.waiting else ""
        print(f"campaign {campaign.name} ({campaign.source}): {len(specs)} runs, {done} done, "
              f"{len(specs) - done} to run{waits}; store {store.root}")
        return 0
    *_, result = _run(args, argv)
    return 1 if result.counts["failed"] else 0


def _results_dir(args: argparse.Namespace, campaign: Any) -> str:
    return args.out or f"{RESULTS_OUT}/{campaign.name}"


def cmd_reproduce(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from gradpath.suite.report.build import build_report

    campaign, _ = _plan(args.preset)
    writable_directory(_results_dir(args, campaign))  # before training, not after it
    campaign, specs, store, result = _run(args, argv)
    files = build_report(campaign, specs, store, _results_dir(args, campaign))
    print(f"wrote {len(files)} files to {files[-1].parent}: " + ", ".join(p.name for p in files))
    return 1 if result.counts["failed"] else 0


def cmd_report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from gradpath.suite.report.build import build_report

    store = Store(args.store, create=False)
    campaign, planned = _plan(args.preset, store)
    specs = planned.specs
    if not store.root.is_dir():
        raise UsageError(f"store {str(store.root)!r} does not exist; run `gradpath reproduce --preset "
                         f"{args.preset}` first, or name the store with --store DIR")
    _print_waiting(planned.waiting)
    out = _results_dir(args, campaign)
    writable_directory(out)
    files = build_report(campaign, specs, store, out)
    print(f"wrote {len(files)} files to {files[-1].parent}: " + ", ".join(p.name for p in files))
    return 0


def cmd_restore(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from gradpath.suite.runs.restore import restore

    store = Store(args.store, create=False)  # created once the tables are read
    campaign, planned = _plan(args.preset, store)
    specs = list(planned.specs)
    source = args.results or f"results/{campaign.name}"  # the published tables
    done = restore(specs, source, store)
    # a frozen-weights run's key holds its partner's final weights, read from the partner's record: once
    # the partners are restored, plan again and restore the frozen runs they let through
    while planned.waiting:
        planned = plan(campaign, store)
        known = {spec.key for spec in specs}
        new = [spec for spec in planned.specs if spec.key not in known]
        if not new:
            break
        specs += new
        done.extend(restore(new, source, store))
    waiting = f"; {len(planned.waiting)} frozen-weights runs wait for a partner" if planned.waiting else ""
    print(f"campaign {campaign.name}: {len(specs)} runs{waiting}; from {source}: {done.line()}; store {args.store}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gradpath`` with ``argv`` (default: the process's arguments) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the error (2) or the help (0)
        return exc.code if isinstance(exc.code, int) else 0
    try:
        # SIGTERM (kill, a batch system, a container's shutdown) stops a command as Ctrl-C does; a
        # campaign passes it on to its worker processes, which Ctrl-C reaches through the terminal
        with terminate_as_interrupt(forward_to_children=args.command in (cmd_campaign, cmd_reproduce)):
            return args.command(args, argv)
    except UsageError as exc:
        print(f"gradpath: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as exc:  # outside a run's training (its reference, say), so no record says it
        print(f"gradpath: error: out of memory ({_first_line(exc)})", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except KeyboardInterrupt:
        print("gradpath: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
