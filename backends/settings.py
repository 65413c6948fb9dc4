"""Everything that defines one training run apart from the problem: method, network, optimiser, data."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from gradpath.backends.adam import ADAM_FORMS
from gradpath.backends.init import layer_sizes
from gradpath.backends.methods import Method, check_gate, get_method
from gradpath.backends.weighting import Weighting, get_weighting
from gradpath.problems.core import Problem
from gradpath.problems.errors import UsageError, require_positive

DTYPES = ("float32", "float64")
# the CLI flag that sets each field, where it differs from --field-name (errors name what users typed)
FLAGS = {"steps": "--iterations"}


def flag(field: str) -> str:
    """The command-line flag of a settings field."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


DEVICES = ("auto", "cpu", "cuda")
# auto: compile where the run is long enough to repay the compiler (torch; jax always compiles);
# True and False, the values before ``auto`` existed, are read as on and off
COMPILE_CHOICES = ("auto", "on", "off")
ANNEAL_EVERY = 10  # the authors' code updates the loss weights every 10 steps (spec 3.2)

# Upper bounds on the sizes a run may name: beyond them a run is a typo, not an experiment. What
# fits in memory is checked separately, against the machine, before a run starts (gradpath.suite.runs.resources).
# Step counts: the compiled step counts in int32 (2**31 - 1), and 1e9 steps at 1 ms a step are 12 days.
MAX_STEPS = 10**9
MAX_WIDTH = 100_000  # the paper's widest network has 100 units a layer
# the hidden layers are unrolled when the step is traced and compiled: compile time grows with depth
MAX_DEPTH = 100
MAX_BATCH = 100_000_000  # points per region and step; the paper draws 128
UPPER_BOUNDS = {"steps": MAX_STEPS, "lr_decay_steps": MAX_STEPS, "log_every": MAX_STEPS, "anneal_every": MAX_STEPS,
                "width": MAX_WIDTH, "depth": MAX_DEPTH, "batch_size": MAX_BATCH}


# the settings that only some methods use: the annealing options (M2, M4) and the gate form (M3, M4)
ANNEALING_OPTIONS = ("weighting", "anneal_alpha", "anneal_every")
GATE_OPTIONS = ("gate",)


def compile_choice(value: bool | str) -> str:
    """``auto``, ``on`` or ``off`` for a compile setting (True is on, False is off); a UsageError otherwise."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in COMPILE_CHOICES:
        raise UsageError(f"unknown compile choice {value!r}; choose one of: {', '.join(COMPILE_CHOICES)}")
    return value


# a run's constant (M1, M3) or initial (M2, M4) loss weights, as sorted (term, weight) pairs
LossWeights = tuple[tuple[str, float], ...]


def canonical_loss_weights(value: Mapping[str, float] | Any) -> LossWeights:
    """``value`` (a mapping term -> weight, or (term, weight) pairs) as sorted (term, float) pairs.

    Raises:
        UsageError: not a mapping or pairs, a term named twice, a weight that is not a positive finite number.

    Example:
        >>> canonical_loss_weights({"boundary": 10, "residual": 1})
        (('boundary', 10.0), ('residual', 1.0))
    """
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        pairs = [tuple(p) for p in value]
    else:
        raise UsageError(f"--loss-weight must be term=weight pairs (a mapping), got {value!r}")
    out: dict[str, float] = {}
    for term, weight in pairs:
        if not isinstance(term, str) or not term:
            raise UsageError(f"--loss-weight term names must be non-empty text, got {term!r}")
        if term in out:
            raise UsageError(f"--loss-weight names term {term!r} twice; give each term once")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight <= 0:
            raise UsageError(f"--loss-weight {term} must be a positive finite number, got {weight!r}")
        out[term] = float(weight)
    return tuple(sorted(out.items()))


def unused_options(method: str) -> tuple[str, ...]:
    """The settings fields that ``method`` does not use (TrainSettings refuses them at other than their defaults)."""
    spec = get_method(method)
    return (() if spec.anneal else ANNEALING_OPTIONS) + (() if spec.net == "gated" else GATE_OPTIONS)


def applicable(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (TrainSettings keyword arguments) without the options that its method does not use.

    A campaign grid, or a shared test setting, crosses every method with annealing options and a
    gate form; each applies where it means something, and the other runs are what they are without it.
    """
    unused = unused_options(settings.get("method", "M1"))
    return {k: v for k, v in settings.items() if k not in unused}


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """One run's settings. Defaults are the paper's (spec 2): 40,001 Adam steps, lr 1e-3 * 0.9^(n/1000),
    128 fresh points per region and step, float32, annealing every 10 steps after the step.

    Attributes:
        method: M1-M4.  width, depth: hidden width and number of hidden layers (None: the problem's).
        gate: gated-network form (M3/M4).  weighting: annealing variant (None: the problem's default).
        anneal_every: steps between lambda updates.  anneal_alpha: EMA weight override (None: the variant's).
        steps: Adam steps.  batch_size: points per region per step.
        lr, lr_decay_rate, lr_decay_steps: the schedule lr * rate^(n / steps).
        adam_eps, adam_form: epsilon and where it enters (``standard`` or ``tf1``).
        loss_weights: term name -> weight (a mapping, or (term, weight) pairs; kept as sorted pairs):
            the weights held constant for M1/M3 and the initial lambdas of M2/M4; a term not named
            keeps weight 1 (the paper's). Only weights other than 1 enter the run key.
        dtype, device: float32/float64; auto/cpu/cuda.  seed: fixes weights, normalisation and batches.
        log_every: steps between history rows (and the chunk a compiled call runs).
        compile: ``auto``, ``on`` or ``off`` (True/False: on/off). torch compiles the step with
            inductor when on, runs it eagerly when off (same maths, no compile time, slower steps),
            and under auto compiles when the run is long enough to repay it
            (:mod:`gradpath.backends.torch.compile_choice`); jax always compiles. The run key records only
            whether compiling was allowed (auto and on are the same run), the run's manifest the route taken.

    ``gate`` applies to M3/M4 and ``weighting``/``anneal_*`` to M2/M4; the other methods refuse a
    value other than the default (it would give the same run a second key).
    """

    method: str = "M1"
    width: int | None = None
    depth: int | None = None
    gate: str = "code"
    weighting: str | None = None
    anneal_every: int = ANNEAL_EVERY
    anneal_alpha: float | None = None
    steps: int = 40001
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay_rate: float = 0.9
    lr_decay_steps: int = 1000
    adam_eps: float = 1e-8
    adam_form: str = "standard"
    dtype: str = "float32"
    device: str = "auto"
    seed: int = 0
    log_every: int = 100
    compile: bool | str = "auto"
    loss_weights: Union[Mapping[str, float], LossWeights] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "compile", compile_choice(self.compile))
        object.__setattr__(self, "loss_weights", canonical_loss_weights(self.loss_weights))
        get_method(self.method)
        check_gate(self.gate)
        if self.weighting is not None:
            get_weighting(self.weighting)
        for name in ("steps", "batch_size", "anneal_every", "lr_decay_steps", "log_every"):
            require_positive(flag(name), getattr(self, name))
        for name in ("width", "depth"):
            if getattr(self, name) is not None:
                require_positive(flag(name), getattr(self, name))
        for name, bound in UPPER_BOUNDS.items():
            value = getattr(self, name)
            if value is not None and value > bound:
                raise UsageError(f"{flag(name)} must be at most {bound:,}, got {value:,}")
        for name in ("lr", "lr_decay_rate", "adam_eps"):
            require_positive(flag(name), getattr(self, name), integer=False)
        if self.anneal_alpha is not None and not 0 < self.anneal_alpha <= 1:
            raise UsageError(f"--anneal-alpha must lie in (0, 1], got {self.anneal_alpha!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"--seed must be a non-negative integer, got {self.seed!r}")
        for name, value, choices in (("dtype", self.dtype, DTYPES), ("device", self.device, DEVICES),
                                     ("adam form", self.adam_form, ADAM_FORMS)):
            if value not in choices:
                raise UsageError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
        # a number the run's dtype cannot hold becomes inf or 0 in the compiled step: a diverged run, not an experiment
        limits = np.finfo(self.dtype)
        low, high = float(limits.tiny), float(limits.max)
        for name in ("lr", "lr_decay_rate", "adam_eps"):
            value = getattr(self, name)
            if not low <= value <= high:
                raise UsageError(f"{flag(name)} must lie within {self.dtype}'s range [{low:.3g}, {high:.3g}], "
                                 f"got {value!r}")
        for term, value in self.loss_weights:
            if not low <= value <= high:
                raise UsageError(f"--loss-weight {term} must lie within {self.dtype}'s range "
                                 f"[{low:.3g}, {high:.3g}], got {value!r}")
        # an option the method does not use would still enter the run's key: a second, identical run
        unused = unused_options(self.method)
        if "gate" in unused and self.gate != "code":
            raise UsageError(f"--gate applies to the gated network (M3, M4); {self.method} uses the plain MLP")
        if self.weighting is not None and get_weighting(self.weighting).every is not None \
                and self.anneal_every != ANNEAL_EVERY:  # the rule fixes its own interval: a second key for one run
            raise UsageError(f"--anneal-every does not apply to --weighting {self.weighting}, which updates every "
                             f"{get_weighting(self.weighting).every} step(s) by definition")
        if "anneal_every" in unused and (self.anneal_alpha is not None or self.anneal_every != ANNEAL_EVERY):
            raise UsageError(f"--anneal-alpha and --anneal-every apply to the methods that anneal (M2, M4); "
                             f"{self.method} keeps its loss weights at 1")

    @property
    def method_spec(self) -> Method:
        """The Method record of ``method``."""
        return get_method(self.method)

    def weighting_for(self, problem: Problem) -> Weighting:
        """The annealing rule: the explicit one, else the problem's default."""
        return get_weighting(self.weighting or problem.default_weighting)

    def layers_for(self, problem: Problem) -> tuple[int, ...]:
        """Network sizes: the problem's, with width/depth replaced where given."""
        return layer_sizes(problem.layers, self.width, self.depth)

    def loss_weights_for(self, problem: Problem) -> dict[str, float]:
        """Every term's weight (``loss_weights``, else 1), in the order of ``problem.term_names()``.

        Raises:
            UsageError: ``loss_weights`` names a term the problem does not have.
        """
        names = problem.term_names()
        given = dict(self.loss_weights)
        for term in given:
            if term not in names:
                raise UsageError(f"unknown loss term {term!r} for {problem.name}; choose one of: {', '.join(names)}")
        return {name: given.get(name, 1.0) for name in names}

    def initial_weights(self, problem: Problem) -> np.ndarray:
        """The ``(n_terms,)`` loss weights of step 0, in term order (ones unless ``loss_weights`` says otherwise)."""
        return np.asarray(list(self.loss_weights_for(problem).values()), np.float64)

    def resolved(self, problem: Problem) -> dict[str, Any]:
        """All settings with the problem-dependent defaults filled in, for the run record.

        ``loss_weights`` appears, as a JSON object {term: weight}, only when some weight is not 1:
        a run at the paper's weights keeps the key it had before the setting existed.

        Raises:
            UsageError: a weighting other than the problem's default for a method that does not anneal;
                a loss weight for a term the problem does not have.
        """
        if not self.method_spec.anneal and self.weighting not in (None, problem.default_weighting):
            raise UsageError(f"--weighting applies to the methods that anneal (M2, M4); {self.method} keeps its "
                             f"loss weights at 1")
        out = dataclasses.asdict(self)
        # whether the run may compile, as before ``auto`` existed: the keys of stored runs stay what they were
        out["compile"] = self.compile != "off"
        out.pop("loss_weights")
        weights = {k: v for k, v in self.loss_weights_for(problem).items() if v != 1.0}
        if weights:
            out["loss_weights"] = dict(sorted(weights.items()))
        layers = self.layers_for(problem)
        out.update(width=layers[1], depth=len(layers) - 2, layers=list(layers),
                   weighting=self.weighting_for(problem).name)
        return out
