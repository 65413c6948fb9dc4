"""The ``balancing`` preset's report (issue 21): does loss-weight annealing beat a tuned constant weight?

Every function here is pure: it reads the runs table and the long history of
:func:`gradpath.suite.runs.store.gather` and returns tables or text; nothing trains or reads a store.

**Arms.** Each run falls in a *group* (problem, its width x depth and any other setting that varies
between the runs of that problem, e.g. ``helmholtz 50x3``), a *network* (``plain``: M1/M2,
``gated``: M3/M4), a backend and an *arm* (:func:`classify`):

- ``constant c``: M1/M3 whose ``loss_weights`` hold every non-residual term at c and the residual at 1
  (c = 1: no ``loss_weights`` at all, the paper's M1/M3);
- ``frozen``: M1/M3 whose ``loss_weights`` equal the final lambdas (``weight_<term>`` of the last history
  row) of the annealed run (M2/M4) of the same group, network, backend and seed, with the ``code``
  rule (``frozen <rule>`` for another rule). The config carries only the numbers
  (:mod:`gradpath.suite.runs.frozen`), so the run is recognised by that match, or by a config column
  whose name holds "frozen" where one is set. A run whose weights match neither is ``other weights``;
- a rule (``code``, ``relobralo``, ...): M2/M4 with that ``weighting``; another ``anneal_every`` or
  ``anneal_alpha`` than the rule's other runs in the group is named in the arm.

**Statistics** (:mod:`gradpath.suite.analysis.statistics`): a cell's error is the geometric mean over
seeds with its 95% BCa bootstrap interval; every arm is compared with ``code`` on the same network
paired by seed (same seed: same initial weights and batches), as the ratio of geometric means
(arm / code: below 1 the arm ends lower) with its bootstrap interval and the Wilcoxon signed-rank p
on log error, Benjamini-Hochberg q over the whole table. Diverged runs have no error: they are left
out of the means and comparisons and counted beside them. Cost: the median ms per step of the arm
over the median of M1 of the same group and backend, and over the same network's constant-1 run
(M1 or M3); timings are of whatever machine sharing the runs had.

**Selected constants.** The *oracle* constant is the c with the lowest geometric mean over all seeds:
it is chosen on the test error it is judged by, which no user has. The *honest* constant is
cross-fitted: the c best on the first half of the design's seeds (0-4) is evaluated on the second
(5-9) and vice versa; both choices are reported and the pooled errors (each seed scored by the
constant chosen without it) are compared with ``code``. A constant with a diverged seed in the half
it would be chosen on is not chosen (no user would pick a setting that diverged).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradpath.problems import get_problem
from gradpath.suite.analysis.method_comparison import p_text, ratio_text
from gradpath.suite.analysis.statistics import (MIN_SEEDS, Comparison, adjust_pvalues, geometric_mean,
                                                paired_comparison, performance_profile)
from gradpath.suite.analysis.tables import BOOKKEEPING, config_columns, is_missing

PRESET = "balancing"
REFERENCE = "code"  # the paper's annealing rule: every arm is compared with it
NETWORK = {"M1": "plain", "M2": "plain", "M3": "gated", "M4": "gated"}
FIXED = ("M1", "M3")  # constant weights; their annealed partners are M2, M4
ANNEALED = {"M2": "M1", "M4": "M3"}
# settings that make the arm (or the seed): never part of a group's label
ARM_COLUMNS = ("method", "weighting", "loss_weights", "anneal_every", "anneal_alpha", "seed", "backend", "layers",
               "width", "depth", "gate", *BOOKKEEPING)
MATCH_RTOL = 1e-6  # a frozen run's weights are the partner's final lambdas written to JSON: equal up to rounding
ORACLE, HONEST, FROZEN, OTHER = "oracle constant", "honest constant", "frozen", "other weights"
MISSING_STATUSES_OK = ("complete", "diverged")  # finished: a diverged run is an outcome, not a missing run


@dataclass(frozen=True)
class Design:
    """What the preset runs, so that a partly done store can say what it lacks.

    Attributes:
        problems, networks: the (problem, network) pairs expected on the primary backend.
        constants: the constant weights c.  rules: the annealing rules (``reference`` among them).
        seeds: the seeds of the primary backend (split in half for the honest constant).
        frozen: whether the frozen annealed weight is an arm.  primary: the backend of the main table.
        agreement_backend, agreement_problems, agreement_rules, agreement_seeds: the second backend's runs.
    """

    problems: tuple[str, ...] = ("helmholtz", "klein-gordon")
    networks: tuple[str, ...] = ("plain", "gated")
    constants: tuple[float, ...] = (1, 10, 30, 100, 300, 1000)
    rules: tuple[str, ...] = ("code", "code-global", "mean", "grad-norm", "relobralo", "ntk")
    seeds: tuple[int, ...] = tuple(range(10))
    frozen: bool = True
    primary: str = "jax"
    agreement_backend: str = "torch"
    agreement_problems: tuple[str, ...] = ("helmholtz",)
    agreement_rules: tuple[str, ...] = ("relobralo", "ntk")
    agreement_seeds: tuple[int, ...] = (0, 1, 2)
    reference: str = REFERENCE

    @property
    def halves(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The design's seeds split in two (0-4 and 5-9 for seeds 0-9)."""
        seeds = sorted(self.seeds)
        return tuple(seeds[:len(seeds) // 2]), tuple(seeds[len(seeds) // 2:])


DESIGN = Design()


def is_balancing(name: str) -> bool:
    """Whether a campaign called ``name`` gets the balancing section (``balancing`` and its variants)."""
    return name == PRESET or name.startswith(PRESET + "-")


# -- classifying runs --------------------------------------------------------------------------

def parse_weights(value: Any) -> dict[str, float]:
    """A runs-table ``loss_weights`` value ({term: w} as JSON text, a mapping, pairs, or missing) as a dict."""
    if is_missing(value) or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    try:
        return {str(k): float(v) for k, v in value}
    except (TypeError, ValueError):
        return {}


def terms(problem: str, weights: Mapping[str, float]) -> tuple[str, ...]:
    """The problem's loss terms, residual first (the weights' own terms where the problem is unknown)."""
    try:
        return tuple(get_problem(problem).term_names())
    except Exception:  # a problem of a plugin that is not installed here: the weights name its terms
        return ("residual", *sorted(t for t in weights if t != "residual"))


def final_weights(history: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per run key, the finite ``weight_<term>`` values of its last logged step."""
    if history is None or history.empty or "step" not in history:
        return {}
    columns = [c for c in history.columns if c.startswith("weight_")]
    if not columns:
        return {}
    last = history.sort_values(["key", "step"], kind="stable").groupby("key", sort=False).tail(1)
    out = {}
    for _, row in last.iterrows():
        values = {c.removeprefix("weight_"): float(row[c]) for c in columns if np.isfinite(row[c])}
        if values:
            out[str(row["key"])] = values
    return out


def _same_weights(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Equal weights term by term, a term one of them leaves out counting as 1."""
    return all(math.isclose(a.get(t, 1.0), b.get(t, 1.0), rel_tol=MATCH_RTOL) for t in {*a, *b})


def _group_labels(runs: pd.DataFrame) -> pd.Series:
    """Per run, ``<problem> <width>x<depth>`` plus every other setting that varies between the runs of
    its problem and network (so that two configurations are never pooled)."""
    labels = pd.Series("", index=runs.index, dtype=object)
    network = runs["method"].map(NETWORK)
    for (problem, _), frame in runs.groupby([runs["problem"], network], sort=False):
        extra = [c for c in config_columns(frame) if c not in ARM_COLUMNS and c != "problem"
                 and frame[c].map(lambda v: "" if is_missing(v) else str(v)).nunique() > 1]
        for i, row in frame.iterrows():
            sized = not is_missing(row.get("width")) and not is_missing(row.get("depth"))
            size = f" {int(row['width'])}x{int(row['depth'])}" if sized else ""
            parts = [f"{c.removeprefix('param_')}={row[c]}" for c in extra if not is_missing(row[c])]
            labels[i] = f"{problem}{size}" + (f" ({', '.join(parts)})" if parts else "")
    return labels


def _number(value: float) -> str:
    return f"{value:g}"


def _marked_frozen(row: pd.Series) -> bool:
    """A config column naming the run frozen (no such column today; a later marker is honoured)."""
    return any("frozen" in str(c).lower() and not is_missing(v) and v not in (False, "", 0, "false")
               for c, v in row.items() if c != "loss_weights")


def classify(runs: pd.DataFrame, history: pd.DataFrame | None, design: Design = DESIGN) -> pd.DataFrame:
    """One row per run of M1-M4: ``key``, ``name``, ``problem``, ``group``, ``network``, ``backend``,
    ``method``, ``arm``, ``kind`` (constant, frozen, rule, other), ``c`` (the constant, else NaN),
    ``seed``, ``status``, ``error`` (complete runs with a finite positive error, else NaN), ``diverged``,
    ``ms_per_step`` and ``weights`` (the run's ``loss_weights``)."""
    columns = ["key", "name", "problem", "group", "network", "backend", "method", "arm", "kind", "c", "seed",
               "status", "error", "diverged", "ms_per_step", "weights"]
    if runs is None or runs.empty or not {"method", "problem", "seed"} <= set(runs.columns):
        return pd.DataFrame(columns=columns)
    runs = runs[runs["method"].isin(NETWORK)].copy()
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs["group"] = _group_labels(runs)
    runs["network"] = runs["method"].map(NETWORK)
    if "backend" not in runs:
        runs["backend"] = design.primary
    finals = final_weights(history if history is not None else pd.DataFrame())
    weights = runs["loss_weights"].map(parse_weights) if "loss_weights" in runs else pd.Series(
        [{}] * len(runs), index=runs.index)
    status = runs["status"] if "status" in runs else pd.Series("complete", index=runs.index)
    error = pd.to_numeric(runs.get("error", pd.Series(np.nan, index=runs.index)), errors="coerce")
    ok = (status == "complete") & np.isfinite(error) & (error > 0)
    ms = pd.to_numeric(runs.get("ms_per_step", pd.Series(np.nan, index=runs.index)), errors="coerce")

    # annealed partners: (group, backend, partner method, seed) -> [(rule, final weights)]
    partners: dict[tuple, list[tuple[str, dict[str, float]]]] = {}
    for i, row in runs[runs["method"].isin(ANNEALED)].iterrows():
        final = finals.get(str(row.get("key")))
        if final:
            where = (row["group"], row["backend"], ANNEALED[row["method"]], row["seed"])
            partners.setdefault(where, []).append((str(row.get("weighting") or REFERENCE), final))

    rows = []
    for i, row in runs.iterrows():
        w, kind, c = weights[i], "", math.nan
        if row["method"] in ANNEALED:
            kind, arm = "rule", str(row.get("weighting") if not is_missing(row.get("weighting")) else REFERENCE)
            if w:  # initial lambdas other than ones: another experiment than the rule as published
                arm += " (initial " + ", ".join(f"{t}={_number(v)}" for t, v in sorted(w.items())) + ")"
        else:
            matched = [rule for rule, final in partners.get((row["group"], row["backend"], row["method"], row["seed"]),
                                                             []) if w and _same_weights(w, final)]
            names = terms(row["problem"], w)
            residual, others = names[0], names[1:]
            uniform = {w.get(t, 1.0) for t in others}
            if matched:
                kind = "frozen"
                arm = FROZEN if REFERENCE in matched or design.reference in matched else f"{FROZEN} {matched[0]}"
            elif w and _marked_frozen(row):
                kind, arm = "frozen", FROZEN
            elif math.isclose(w.get(residual, 1.0), 1.0) and len(uniform) == 1 and set(w) <= set(names):
                kind, c = "constant", float(uniform.pop())
                arm = f"constant {_number(c)}"
            else:
                kind = "other"
                arm = f"{OTHER} " + ", ".join(f"{t}={_number(v)}" for t, v in sorted(w.items()))
        rows.append({"key": row.get("key"), "name": row.get("name"), "problem": row["problem"], "group": row["group"],
                     "network": row["network"], "backend": row["backend"], "method": row["method"], "arm": arm,
                     "kind": kind, "c": c, "seed": row["seed"], "status": status[i],
                     "error": float(error[i]) if ok[i] else math.nan,
                     "diverged": bool(status[i] == "diverged" or (status[i] == "complete" and not ok[i])),
                     "ms_per_step": float(ms[i]) if np.isfinite(ms[i]) else math.nan, "weights": w})
    out = pd.DataFrame(rows, columns=columns)
    _name_annealing_variants(out, runs)
    # a constant seen on one seed only, off the design's grid, is most likely a frozen run whose partner
    # left no history: it must not enter the choice of constants, where one lucky seed would win
    lone = (out["kind"] == "constant") & ~out["c"].isin([float(c) for c in design.constants])
    if lone.any():
        counts = out[lone].groupby(["group", "network", "backend", "c"])["seed"].transform("nunique")
        few = counts[counts < max(MIN_SEEDS, len(design.seeds) // 2)].index
        out.loc[few, "kind"] = "other"
        out.loc[few, "arm"] = OTHER
    return out


def _name_annealing_variants(out: pd.DataFrame, runs: pd.DataFrame) -> None:
    """Append ``anneal_every``/``anneal_alpha`` to a rule's arm where its runs in one group differ in them."""
    for column in ("anneal_every", "anneal_alpha"):
        if column not in runs:
            continue
        values = runs[column].map(lambda v: "" if is_missing(v) else _number(float(v))).to_numpy()
        rule = out["kind"] == "rule"
        frame = out[rule].assign(value=values[rule.to_numpy()])
        for _, group in frame.groupby(["group", "network", "backend", "arm"], sort=False):
            if group["value"].nunique() > 1:
                short = column.removeprefix("anneal_")
                out.loc[group.index, "arm"] = [f"{a} ({short} {v or 'default'})" for a, v in
                                               zip(group["arm"], group["value"])]


# -- errors by seed ----------------------------------------------------------------------------

def seed_series(arms: pd.DataFrame, column: str = "error") -> dict[tuple, pd.Series]:
    """Per (group, network, backend, arm), ``column`` by seed (NaN kept; a seed run twice: its first run)."""
    out = {}
    for key, frame in arms.groupby(["group", "network", "backend", "arm"], sort=False):
        frame = frame.drop_duplicates("seed")
        out[key] = pd.Series(frame[column].to_numpy(float), index=pd.Index(frame["seed"].to_numpy(), name="seed"),
                             name=column).sort_index(kind="stable")
    return out


def _finite(series: pd.Series) -> pd.Series:
    return series[np.isfinite(series)]


def _geomean_of(series: pd.Series) -> float:
    values = _finite(series)
    return float(10 ** np.log10(values).mean()) if len(values) else math.nan


def _choose(constants: Mapping[float, pd.Series], seeds: Sequence[int]) -> float:
    """The constant with the lowest geometric mean on ``seeds`` (ties: the smaller c); NaN where none has
    two finite errors there. A constant with a diverged seed among them is not chosen."""
    best, best_value = math.nan, math.inf
    for c in sorted(constants):
        part = constants[c][constants[c].index.isin(seeds)]
        if len(_finite(part)) < MIN_SEEDS or (~np.isfinite(part)).any():
            continue
        value = _geomean_of(part)
        if value < best_value:
            best, best_value = c, value
    return best


@dataclass(frozen=True)
class Selection:
    """A selected constant: ``choices`` (c, chosen on seeds, evaluated on seeds) and the errors by seed."""

    label: str
    choices: tuple[tuple[float, tuple[int, ...], tuple[int, ...]], ...]
    errors: pd.Series
    note: str = ""
    ms: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))


def _seeds_text(seeds: Sequence[int]) -> str:
    seeds = sorted(int(s) for s in seeds)
    if not seeds:
        return "no seed"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def oracle_constant(constants: Mapping[float, pd.Series],
                    ms: Mapping[float, pd.Series] | None = None) -> Selection:
    """The constant best on the geometric mean over every seed it ran (chosen on its test error)."""
    seeds = sorted({s for e in constants.values() for s in e.index})
    c = _choose(constants, seeds)
    if not np.isfinite(c):
        return Selection(ORACLE, (), pd.Series(dtype=float), "no constant has two finite errors")
    return Selection(ORACLE, ((c, tuple(seeds), tuple(seeds)),), constants[c],
                     ms=(ms or {}).get(c, pd.Series(dtype=float)))


def honest_constant(constants: Mapping[float, pd.Series], halves: tuple[Sequence[int], Sequence[int]],
                    ms: Mapping[float, pd.Series] | None = None) -> Selection:
    """Cross-fitted constant: chosen on each half of the seeds, scored on the other; ``errors`` pools both."""
    choices, parts, times, notes = [], [], [], []
    for chosen_on, scored_on in (halves, halves[::-1]):
        c = _choose(constants, chosen_on)
        if not np.isfinite(c):
            notes.append(f"no constant has two finite errors on seeds {_seeds_text(chosen_on)}")
            continue
        choices.append((c, tuple(chosen_on), tuple(scored_on)))
        parts.append(constants[c][constants[c].index.isin(scored_on)])
        if ms and c in ms:
            times.append(ms[c][ms[c].index.isin(scored_on)])
    errors = pd.concat(parts).sort_index(kind="stable") if parts else pd.Series(dtype=float)
    return Selection(HONEST, tuple(choices), errors, "; ".join(notes),
                     pd.concat(times).sort_index() if times else pd.Series(dtype=float))


def selection_text(selection: Selection) -> str:
    """``c = 30 (chosen on 0-4, scored on 5-9); c = 100 (chosen on 5-9, scored on 0-4)``."""
    if len(selection.choices) == 1 and selection.choices[0][1] == selection.choices[0][2]:
        return f"c = {_number(selection.choices[0][0])} (chosen on the test error of every seed)"
    return "; ".join(f"c = {_number(c)} (chosen on seeds {_seeds_text(a)}, scored on {_seeds_text(b)})"
                     for c, a, b in selection.choices) or selection.note


# -- the table ---------------------------------------------------------------------------------

def _arm_order(arm: str, kind: str, c: float, design: Design) -> tuple:
    rank = {"constant": 0, "selected": 1, "frozen": 2, "rule": 3, "other": 4}[kind]
    if kind == "constant":
        return (rank, c, arm)
    if kind == "rule":
        base = arm.split(" (")[0]
        return (rank, design.rules.index(base) if base in design.rules else len(design.rules), arm)
    return (rank, 0, arm)


def _comparison(errors: pd.Series, reference: pd.Series | None) -> Comparison | None:
    if reference is None:
        return None
    return paired_comparison(_finite(errors), _finite(reference))


def _ratio(a: pd.Series, b: pd.Series | None) -> float:
    """Median of ``a`` over median of ``b`` (NaN where either has no finite value)."""
    if b is None:
        return math.nan
    a, b = _finite(a), _finite(b)
    return float(a.median() / b.median()) if len(a) and len(b) and b.median() > 0 else math.nan


def _row(group: str, network: str, backend: str, arm: str, kind: str, c: float, errors: pd.Series,
         diverged: int, ms: pd.Series, reference: pd.Series | None, m1_ms: pd.Series | None,
         net_ms: pd.Series | None, chosen: str = "", is_reference: bool = False) -> dict[str, object]:
    geo = geometric_mean(_finite(errors).to_numpy()) if len(_finite(errors)) else None
    comparison = None if is_reference else _comparison(errors, reference)
    return {"group": group, "network": network, "backend": backend, "arm": arm, "kind": kind, "c": c,
            "chosen": chosen, "n": int(len(_finite(errors))), "diverged": int(diverged),
            "geomean": geo.value if geo else math.nan, "geomean_low": geo.low if geo else math.nan,
            "geomean_high": geo.high if geo else math.nan,
            "pairs": comparison.n if comparison else (len(_finite(errors)) if is_reference else 0),
            "ratio": comparison.ratio.value if comparison else (1.0 if is_reference else math.nan),
            "ratio_low": comparison.ratio.low if comparison else math.nan,
            "ratio_high": comparison.ratio.high if comparison else math.nan,
            "p_value": comparison.p_value if comparison else math.nan,
            "p_improvement": comparison.improvement.value if comparison else math.nan,
            "note": (comparison.note if comparison else ("reference" if is_reference else "no code runs to pair with")),
            "cost_vs_m1": _ratio(ms, m1_ms), "cost_vs_unannealed": _ratio(ms, net_ms)}


def balancing_table(arms: pd.DataFrame, design: Design = DESIGN, backend: str | None = None) -> pd.DataFrame:
    """The closing table: per (group, network) on ``backend`` (default: the design's primary, else the
    backend with the most runs), every constant, the oracle and honest constants, the frozen weight and
    every rule: n, diverged, geometric mean [95% CI], ratio against ``code`` [95% CI], p and q (BH over
    the table), P(arm lower), and the cost ratios."""
    backend = backend or primary_backend(arms, design)
    arms = arms[arms["backend"] == backend]
    if arms.empty:
        return pd.DataFrame()
    errors, times = seed_series(arms, "error"), seed_series(arms, "ms_per_step")
    diverged = arms.drop_duplicates(["group", "network", "backend", "arm", "seed"]).groupby(
        ["group", "network", "backend", "arm"], sort=False)["diverged"].sum()
    rows = []
    order = {n: i for i, n in enumerate(design.networks)}
    groups = sorted(arms.groupby(["group", "network"], sort=False),
                    key=lambda g: (g[0][0], order.get(g[0][1], len(order)), g[0][1]))
    for (group, network), frame in groups:
        ref_key = (group, network, backend, design.reference)
        reference = errors.get(ref_key)
        m1_ms = times.get((group, "plain", backend, "constant 1"))
        net_ms = times.get((group, network, backend, "constant 1"))
        kinds = frame.drop_duplicates("arm").set_index("arm")
        for arm, meta in sorted(kinds.iterrows(), key=lambda a: _arm_order(a[0], a[1]["kind"], a[1]["c"], design)):
            key = (group, network, backend, arm)
            rows.append(_row(group, network, backend, arm, meta["kind"], meta["c"], errors[key], diverged[key],
                             times[key], reference, m1_ms, net_ms, is_reference=key == ref_key))
            if meta["kind"] == "constant" and arm == _last_constant(kinds):
                rows += _selected_rows(group, network, backend, kinds, errors, times, reference, m1_ms, net_ms,
                                       design)
    table = pd.DataFrame(rows)
    table["q_value"] = adjust_pvalues(table["p_value"].to_numpy())
    return table


def _last_constant(kinds: pd.DataFrame) -> str:
    constants = kinds[kinds["kind"] == "constant"]
    return str(constants["c"].idxmax()) if len(constants) else ""


def constants_of(errors: Mapping[tuple, pd.Series], kinds: pd.DataFrame, group: str, network: str,
                 backend: str) -> dict[float, pd.Series]:
    """Per constant c of one group and network, its errors by seed."""
    constants = kinds[kinds["kind"] == "constant"]
    return {float(meta["c"]): errors[(group, network, backend, arm)] for arm, meta in constants.iterrows()}


def _selected_rows(group, network, backend, kinds, errors, times, reference, m1_ms, net_ms,
                   design: Design) -> list[dict[str, object]]:
    constants = constants_of(errors, kinds, group, network, backend)
    ms = constants_of(times, kinds, group, network, backend)
    out = []
    for selection in (oracle_constant(constants, ms), honest_constant(constants, design.halves, ms)):
        c = selection.choices[0][0] if len(selection.choices) == 1 else math.nan
        row = _row(group, network, backend, selection.label, "selected", c, selection.errors, 0, selection.ms,
                   reference, m1_ms, net_ms, chosen=selection_text(selection))
        if selection.note and not row["note"]:
            row["note"] = selection.note
        out.append(row)
    return out


def side_by_side_cost(table: pd.DataFrame, cost: pd.DataFrame, design: Design = DESIGN) -> pd.DataFrame:
    """``table`` with its cost columns taken from a side-by-side measurement (``cost``: one row per
    configuration, the runs-table configuration columns and ``ms_per_step``, as ``gradpath bench
    --campaign`` writes ``campaign-cost.csv``) instead of each run's own timing; ``cost_source`` says
    which a row has. A constant's cost is its own configuration's; the selected constants and the
    frozen weight (constant weights too: only the numbers differ) take the median of the constants'.
    A row the measurement lacks keeps its runs' timing."""
    if table.empty or cost is None or cost.empty:
        return table.assign(cost_source="runs") if not table.empty else table
    arms = classify(cost.assign(status="complete", error=math.nan), None, design)
    ms = arms.groupby(["group", "network", "backend", "arm"])["ms_per_step"].median()
    constants = arms[arms["kind"] == "constant"].groupby(["group", "network", "backend"])["ms_per_step"].median()
    table = table.copy()
    table["cost_source"] = "runs"
    for i, row in table.iterrows():
        where = (row["group"], row["network"], row["backend"])
        own = ms.get((*where, row["arm"])) if row["kind"] in ("constant", "rule") else constants.get(where)
        m1, net = ms.get((row["group"], "plain", row["backend"], "constant 1")), ms.get((*where, "constant 1"))
        if own is None or m1 is None or net is None:
            continue
        table.loc[i, ["cost_vs_m1", "cost_vs_unannealed", "cost_source"]] = [own / m1, own / net, "side by side"]
    return table


def primary_backend(arms: pd.DataFrame, design: Design = DESIGN) -> str:
    """The design's primary backend where it has runs, else the backend with the most runs."""
    if arms.empty:
        return design.primary
    backends = arms["backend"].value_counts()
    return design.primary if design.primary in backends.index else str(backends.sort_index().idxmax())


def table_markdown(table: pd.DataFrame) -> list[str]:
    """The closing table as markdown lines."""
    if table.empty:
        return []
    lines = ["| problem | network | arm | seeds (diverged) | error geo-mean [95% CI] | arm / code [95% CI] | p | "
             "q (BH) | P(arm lower) | ms/step ÷ M1 | ÷ same net unannealed |\n",
             "|---|---|---|---|---|---|---|---|---|---|---|\n"]
    for _, r in table.iterrows():
        arm = f"**{r['arm']}**" if r["kind"] == "selected" else r["arm"]
        if r["chosen"]:
            arm += f": {r['chosen']}"
        ratio = "1 (reference)" if r["note"] == "reference" else (
            ratio_text(r["ratio"], r["ratio_low"], r["ratio_high"]) if np.isfinite(r["ratio"]) else f"- ({r['note']})")
        lines.append(f"| {r['group']} | {r['network']} | {arm} | {r['n']}"
                     + (f" ({r['diverged']})" if r["diverged"] else "")
                     + f" | {ratio_text(r['geomean'], r['geomean_low'], r['geomean_high'])} | {ratio} | "
                     f"{p_text(r['p_value'])} | {p_text(r['q_value'])} | {_two(r['p_improvement'])} | "
                     f"{_two(r['cost_vs_m1'])} | {_two(r['cost_vs_unannealed'])} |\n")
    return lines


def _two(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.2f}"


# -- backend agreement -------------------------------------------------------------------------

def agreement_table(arms: pd.DataFrame, design: Design = DESIGN) -> pd.DataFrame:
    """Per (group, network, arm) run on the primary and another backend: the other's errors over the
    primary's, paired by seed (both backends start a seed from the same weights and batches), with the
    largest per-seed factor between them; q: BH over the table."""
    primary = primary_backend(arms, design)
    errors = seed_series(arms, "error")
    rows = []
    for (group, network, backend, arm), other in errors.items():
        base = errors.get((group, network, primary, arm))
        if backend == primary or base is None:
            continue
        c = paired_comparison(_finite(other), _finite(base))
        both = pd.concat([_finite(other).rename("a"), _finite(base).rename("b")], axis=1, join="inner")
        gap = float((10 ** np.abs(np.log10(both["a"] / both["b"]))).max()) if len(both) else math.nan
        rows.append({"group": group, "network": network, "arm": arm, "backend": backend, "primary": primary,
                     "pairs": c.n, "ratio": c.ratio.value, "ratio_low": c.ratio.low, "ratio_high": c.ratio.high,
                     "p_value": c.p_value, "largest_factor": gap, "note": c.note})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["q_value"] = adjust_pvalues(table["p_value"].to_numpy())
    return table


def agreement_markdown(table: pd.DataFrame) -> list[str]:
    """The backend-agreement table as markdown lines."""
    if table.empty:
        return []
    lines = ["| problem | network | arm | backends | pairs | ratio of geo-means [95% CI] | p | q (BH) | "
             "largest per-seed factor |\n", "|---|---|---|---|---|---|---|---|---|\n"]
    for _, r in table.iterrows():
        ratio = (ratio_text(r["ratio"], r["ratio_low"], r["ratio_high"]) if np.isfinite(r["ratio"])
                 else f"- ({r['note']})")
        lines.append(f"| {r['group']} | {r['network']} | {r['arm']} | {r['backend']} / {r['primary']} | {r['pairs']} | "
                     f"{ratio} | {p_text(r['p_value'])} | {p_text(r['q_value'])} | {_two(r['largest_factor'])} |\n")
    return lines


# -- what is missing ---------------------------------------------------------------------------

def _expected_arms(design: Design) -> list[str]:
    return ([f"constant {_number(float(c))}" for c in design.constants] + ([FROZEN] if design.frozen else [])
            + list(design.rules))


def _decision_arms(design: Design) -> list[str]:
    """The arms the answer needs: ``code`` and every constant (the honest constant is chosen among them)."""
    return [design.reference] + [f"constant {_number(float(c))}" for c in design.constants]


def missing_runs(arms: pd.DataFrame, design: Design = DESIGN) -> pd.DataFrame:
    """Per expected (group or problem, network, backend, arm): the design's seeds without a finished run
    (``seeds``) and why (``why``: no record, or the status of the record). Diverged runs are finished."""
    rows = []
    plans = [(design.primary, design.problems, design.networks, _expected_arms(design), design.seeds)]
    if design.agreement_backend:
        plans.append((design.agreement_backend, design.agreement_problems, design.networks,
                      list(design.agreement_rules), design.agreement_seeds))
    primary = primary_backend(arms, design)
    for backend, problems, networks, expected, seeds in plans:
        backend = primary if backend == design.primary else backend
        for problem in problems:
            for network in networks:
                frame = arms[(arms["problem"] == problem) & (arms["network"] == network)]
                # a problem's groups on the primary backend, so the second backend is asked for the same ones
                groups = sorted(arms.loc[(arms["problem"] == problem) & (arms["network"] == network)
                                         & (arms["backend"] == primary), "group"].unique()) or [problem]
                for group in groups:
                    part = frame[(frame["group"] == group) & (frame["backend"] == backend)]
                    for arm in expected:
                        runs = part[part["arm"] == arm].drop_duplicates("seed").set_index("seed")["status"]
                        absent = [s for s in seeds if s not in runs.index or runs[s] not in MISSING_STATUSES_OK]
                        if absent:
                            why = sorted({str(runs[s]) if s in runs.index else "no record" for s in absent})
                            rows.append({"group": group, "problem": problem, "network": network, "backend": backend,
                                         "arm": arm, "seeds": tuple(absent), "why": ", ".join(why),
                                         "decision": backend == primary and arm in _decision_arms(design)})
    return pd.DataFrame(rows, columns=["group", "problem", "network", "backend", "arm", "seeds", "why", "decision"])


def missing_lines(missing: pd.DataFrame) -> list[str]:
    """One markdown bullet per missing arm."""
    return [f"- {r['group']}, {r['network']}, {r['backend']}: {r['arm']}: seeds {_seeds_text(r['seeds'])} "
            f"({r['why']})\n" for _, r in missing.iterrows()]


# -- the answer --------------------------------------------------------------------------------

def _verdict(row: pd.Series) -> str:
    """``annealing`` where the honest constant's interval (honest / code) lies above 1, ``constant`` below,
    ``undecided`` where it holds 1 or is not computable."""
    if not (np.isfinite(row["ratio_low"]) and np.isfinite(row["ratio_high"])):
        return "undecided"
    return "annealing" if row["ratio_low"] > 1 else ("constant" if row["ratio_high"] < 1 else "undecided")


def _place(row: pd.Series) -> str:
    return f"{row['group']} ({row['network']})"


def _ratio_phrase(row: pd.Series) -> str:
    return f"{ratio_text(row['ratio'], row['ratio_low'], row['ratio_high'])}"


DECISION_RULE = (
    "Decision rule, fixed before the numbers: annealing (the paper's `code` rule) *beats a tuned constant* when, "
    "on every problem and network, the 95% interval of the paired ratio honest constant / code lies wholly above 1; "
    "a tuned constant *beats annealing* when every interval lies wholly below 1; otherwise the data do not decide "
    "(no multiplicity correction is needed: the claim must hold on every problem at once). The honest constant, not "
    "the oracle, decides: the oracle is chosen on the error it is scored by. Where `code` or a constant lacks one of "
    "the design's seeds, the answer is \"cannot decide: runs missing\".")


def answer(table: pd.DataFrame, missing: pd.DataFrame, design: Design = DESIGN) -> str:
    """The paragraph answering "Does annealing beat a tuned constant weight?" by :data:`DECISION_RULE`."""
    decisive = missing[missing["decision"]] if not missing.empty else missing
    if table.empty or not decisive.empty:
        what = sorted({f"{r['group']} {r['network']}: {r['arm']}" for _, r in decisive.iterrows()})
        listed = "; ".join(what[:8]) + (f"; and {len(what) - 8} more" if len(what) > 8 else "")
        return ("**Answer: cannot decide: runs missing** " + (f"({listed})" if listed else "(no run has finished)")
                + ". The comparisons below use what has finished and are provisional.")
    honest = table[table["arm"] == HONEST]
    verdicts = {_place(r): (_verdict(r), _ratio_phrase(r)) for _, r in honest.iterrows()}
    kinds = {v for v, _ in verdicts.values()}
    detail = "; ".join(f"{place}: honest constant / code = {phrase}" for place, (_, phrase) in verdicts.items())
    if kinds == {"annealing"}:
        head = ("**Answer: yes.** On every problem and network here, `code` annealing ends lower than a constant "
                "weight chosen on other seeds")
    elif kinds == {"constant"}:
        head = ("**Answer: no.** On every problem and network here, a constant weight chosen on other seeds ends "
                "lower than `code` annealing")
    elif {"annealing", "constant"} <= kinds:
        head = ("**Answer: it depends on the problem.** Annealing wins on "
                + ", ".join(p for p, (v, _) in verdicts.items() if v == "annealing") + " and a tuned constant on "
                + ", ".join(p for p, (v, _) in verdicts.items() if v == "constant"))
    else:
        head = ("**Answer: the data cannot decide it.** On "
                + ", ".join(p for p, (v, _) in verdicts.items() if v == "undecided")
                + " the interval holds 1 (or no pair could be formed)")
    parts = [f"{head} ({detail})."]
    parts.append(_side_sentences(table, design))
    if not missing.empty:  # arms the answer does not need, but whose rows above are short of seeds
        arms = sorted({r["arm"] for _, r in missing.iterrows()})
        parts.append(f"Still missing, not needed for this answer: {', '.join(arms)} (listed below).")
    return " ".join(p for p in parts if p)


def _side_sentences(table: pd.DataFrame, design: Design) -> str:
    """What the oracle, the frozen weight and the other rules add, as numbers."""
    out = []
    oracle = table[table["arm"] == ORACLE]
    if len(oracle):
        out.append("The oracle constant (no user has it: it is picked on the test error) against code: "
                   + "; ".join(f"{_place(r)} {_ratio_phrase(r)}" for _, r in oracle.iterrows()) + ".")
    frozen = table[table["arm"] == FROZEN]
    if len(frozen):
        out.append("Freezing each seed's final annealed weight from the start (does the trajectory matter, or only "
                   "where it ends?) against code: " + "; ".join(f"{_place(r)} {_ratio_phrase(r)}"
                                                               for _, r in frozen.iterrows()) + ".")
    rules = table[(table["kind"] == "rule") & (table["note"] != "reference")]
    if len(rules):
        said = []
        for arm, frame in rules.groupby("arm", sort=False):
            lower = int(((frame["ratio_high"] < 1) & (frame["q_value"] < 0.05)).sum())
            higher = int(((frame["ratio_low"] > 1) & (frame["q_value"] < 0.05)).sum())
            said.append(f"{arm} lower on {lower}, higher on {higher} of {len(frame)} "
                        f"(ratios {frame['ratio'].min():.3g}-{frame['ratio'].max():.3g})")
        out.append("The other rules against code, counting a problem and network where the interval excludes 1 and "
                   "q < 0.05: " + "; ".join(said) + ".")
    return " ".join(out)


# -- across problems ---------------------------------------------------------------------------

PROFILE_ARMS = (ORACLE, HONEST, FROZEN)


def profile_values(table: pd.DataFrame, design: Design = DESIGN) -> pd.DataFrame:
    """Rows: (problem, network), columns: the selected constants, the frozen weight and every rule;
    values: geometric-mean error. Only rows where every column has a value (a method that ran alone
    would count as the best)."""
    if table.empty:
        return pd.DataFrame()
    keep = table[(table["kind"] == "rule") | table["arm"].isin(PROFILE_ARMS)]
    values = keep.assign(place=keep["group"] + " " + keep["network"]).pivot_table(
        index="place", columns="arm", values="geomean", aggfunc="first", sort=True)
    order = [a for a in (*PROFILE_ARMS, *design.rules) if a in values.columns]
    values = values[order + sorted(set(values.columns) - set(order))]
    return values.dropna()


def profile(table: pd.DataFrame, taus: Sequence[float], design: Design = DESIGN) -> pd.DataFrame:
    """:func:`gradpath.suite.analysis.statistics.performance_profile` of :func:`profile_values`."""
    values = profile_values(table, design)
    return performance_profile(values, taus) if len(values) else pd.DataFrame()


# -- the section -------------------------------------------------------------------------------

def section_text(table: pd.DataFrame, agreement: pd.DataFrame, missing: pd.DataFrame, figure_lines: Sequence[str],
                 design: Design = DESIGN) -> str:
    """REPORT.md's balancing section from the tables of this module and the figures' markdown."""
    halves = design.halves
    parts = ["## Loss balancing: does annealing beat a tuned constant weight?\n\n",
             "Issue 21. Per problem and network (plain: M1 and M2; gated: M3 and M4), on the "
             f"{primary_backend_of(table, design)} runs: constant weights c on every non-residual term (M1/M3; "
             "c = 1 is the paper's run), the *oracle* constant (the c with the lowest geometric-mean error over all "
             "seeds: chosen on the test error it is scored by, which no user has), the *honest* constant "
             f"(cross-fitted: the c best on seeds {_seeds_text(halves[0])} is scored on {_seeds_text(halves[1])} and "
             "the reverse; a constant with a diverged seed where it is chosen is never chosen), the *frozen* "
             "annealed weight (each seed's M1/M3 run held at the final λ its M2/M4 `code` run reached, recognised by "
             "matching those numbers), and every annealing rule (M2/M4). Each is compared with the paper's `code` "
             "rule on the same network, paired by seed (same initial weights and batches): the ratio of geometric "
             "means (below 1: the arm ends lower) with its 95% BCa bootstrap interval, the Wilcoxon signed-rank p on "
             "log error, Benjamini-Hochberg q over the table. Cost: median ms per step over M1's on the same problem "
             "and backend, and over the same network's unannealed run (M1 or M3), " + _cost_text(table) + "\n\n",
             "### Answer\n\n", answer(table, missing, design) + "\n\n", DECISION_RULE + "\n\n"]
    if not missing.empty:
        parts += ["### Missing runs\n\nExpected by the preset but without a finished run (diverged runs are "
                  "finished: they count as outcomes):\n\n", *missing_lines(missing), "\n"]
    parts += ["### Figures\n\n", *figure_lines]
    lines = table_markdown(table)
    parts += ["### Every rule and constant against `code`\n\n",
              *(lines or ["No run of the balancing arms has finished yet.\n"]), "\n"]
    agree = agreement_markdown(agreement)
    if agree:
        parts += [f"### Backend agreement\n\nThe same arm and seeds on a second backend, over the primary "
                  "backend's, paired by seed (a seed starts from the same weights and batches in both); with three "
                  "seeds the smallest two-sided Wilcoxon p is 0.25, so the interval and the largest per-seed factor "
                  "carry the evidence.\n\n", *agree, "\n"]
    parts += ["Files: `balancing.csv` (the table above), `balancing-agreement.csv`, `balancing-missing.csv`.\n\n"]
    return "".join(parts)


def _cost_text(table: pd.DataFrame) -> str:
    """Where the table's cost columns come from."""
    sources = set(table["cost_source"]) if "cost_source" in table else {"runs"}
    side = ("measured side by side: every configuration of the campaign compiled in one process and timed "
            "round-robin (`gradpath bench --campaign balancing --out DIR`, `campaign-cost.md` beside this report)")
    runs = ("from each run's own ms_per_step: runs trained at different times and loads, so these ratios carry "
            "that noise (`gradpath bench --campaign balancing --out DIR` measures them side by side)")
    if sources == {"side by side"}:
        return side + "."
    if "side by side" in sources:
        return side + "; rows that measurement lacks: " + runs + "."
    return runs + "."


def primary_backend_of(table: pd.DataFrame, design: Design = DESIGN) -> str:
    """The backend of the closing table (the design's primary where the table is empty)."""
    return str(table["backend"].iloc[0]) if not table.empty else design.primary
