"""What a problem is: inputs, outputs, loss terms over sampled regions, exact solution, metric.

A problem is data plus array math written once over an array namespace ``xp`` (numpy,
jax.numpy, torch through array-api-compat, array_api_strict). It never computes derivatives:
each term declares the derivative keys it ``needs`` (``"u"``, ``"u_xx"``, ``"psi_xxy"``) and
the backend hands it plain ``(n,)`` arrays under those keys, computed by its cheapest route.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gradpath.problems.errors import UsageError
from gradpath.problems.geometry import Box

Array = Any  # an array of whichever namespace ``xp`` the backend passes in
Misfit = Callable[[Any, Array, Mapping[str, Array]], "Array | tuple[Array, ...]"]


@dataclass(frozen=True)
class Term:
    """One named loss term: pointwise misfits on points drawn from one or more regions.

    The term's loss is ``scale * sum over regions and over misfit components of mean(misfit**2)``,
    each region drawing its own batch. This reproduces the authors' sums of per-edge means
    (Helmholtz: four edge MSEs under one lambda; Klein-Gordon: MSE(u - x) + MSE(u_t) on one line).

    Attributes:
        name: ``"residual"`` for the PDE term (always the first), else e.g. ``"boundary"``.
        regions: boxes (often degenerate edges) the points are drawn from.
        needs: derivative keys ``<output>_<inputs>`` the misfit reads.
        misfit: ``misfit(xp, x, d) -> (n,) array or tuple of (n,) arrays``; ``x`` is ``(n, d)``
            in physical coordinates, ``d`` maps each key of ``needs`` to an ``(n,)`` array.
        scale: constant factor in front of the term (the cavity's 1/2, for instance).
    """

    name: str
    regions: tuple[Box, ...]
    needs: tuple[str, ...]
    misfit: Misfit
    scale: float = 1.0


def parse_derivative(key: str, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> tuple[int, tuple[int, ...]]:
    """Split a derivative key into (output column, sorted input indices).

    Example:
        >>> parse_derivative("psi_xxy", ("x", "y"), ("psi", "p"))
        (0, (0, 0, 1))
    """
    name, _, wrt = key.partition("_")
    if name not in outputs:
        raise UsageError(f"derivative {key!r} names output {name!r}; the outputs are {outputs}")
    unknown = [c for c in wrt if c not in inputs]
    if unknown or (key.endswith("_") and not wrt):
        raise UsageError(f"derivative {key!r} differentiates by {unknown or wrt!r}, but the inputs are {inputs}")
    return outputs.index(name), tuple(sorted(inputs.index(c) for c in wrt))


def relative_l2(pred: np.ndarray, ref: np.ndarray) -> float:
    """||pred - ref||_2 / ||ref||_2 over all entries (Frobenius for 2-D arrays)."""
    return float(np.linalg.norm((pred - ref).ravel()) / np.linalg.norm(ref.ravel()))


@dataclass(frozen=True, kw_only=True)
class Problem:
    """Base class of every PDE problem; subclasses are frozen dataclasses of their parameters.

    Class attributes a subclass sets:
        name: registry and CLI name (kebab-case); a plugin's entry point must have the same name.
        inputs, outputs: one-letter input names in network order; output names without ``_``
            (default ``("u",)``).
        domain: the residual box (also used for the input normalisation).
        layers: the authors' network, ``(inputs, hidden..., outputs)``.
        test_points_per_axis: the test grid is ``domain.grid(test_points_per_axis)``.
        solution_needs: derivative keys :meth:`solution` reads (the compared field).
        primary_metric: the key of :meth:`metrics` reported as "the error".
        default_weighting: annealing variant used unless a run names one.
        citation: where the problem and its settings come from (optional, default ``""``;
            documentation only, nothing reads it).
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]] = ("u",)
    domain: ClassVar[Box]
    layers: ClassVar[tuple[int, ...]]
    test_points_per_axis: ClassVar[int] = 100
    solution_needs: ClassVar[tuple[str, ...]] = ("u",)
    primary_metric: ClassVar[str] = "rel_l2"
    default_weighting: ClassVar[str] = "code"  # the annealing variant the authors used for it
    citation: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for term in self.terms():
            for key in term.needs:
                parse_derivative(key, self.inputs, self.outputs)
            if any(r.dim != len(self.inputs) for r in term.regions):
                raise UsageError(f"{self.name} term {term.name!r} samples a region of the wrong dimension")
        if self.terms()[0].name != "residual":
            raise UsageError(f"{self.name}: the first term must be named 'residual'")
        self.validate()

    def validate(self) -> None:
        """Raise a UsageError if these parameters give a problem with no meaningful error; called at construction.

        Runs before anything is trained or recorded, so a degenerate case is a one-line usage error
        rather than a run that prints ``rel_l2 inf``. The default checks the closed-form reference
        (where :meth:`exact` gives one and :meth:`reference` is not overridden) on the test grid: it
        must be finite, and the metrics of a perfect prediction must be defined. An all-zero
        reference (Poisson C = 0, Helmholtz a1 = 0) makes every relative error 0/0. A subclass
        extends this (calling ``super().validate()``) or replaces it where the reference is costly
        to compute (the cavity's is solved, not evaluated).
        """
        if type(self).reference is not Problem.reference:
            return
        grid = self.test_grid()
        exact = self.exact(np, grid)
        if exact is None:
            return
        with np.errstate(all="ignore"):  # the degenerate cases divide by zero; they are refused below
            ref = self.solution(np, grid, exact)
            self.require_finite("the exact solution", lambda: ref)
            undefined = [k for k, v in self.metrics(ref, ref).items() if not math.isfinite(v)]
        if undefined:
            raise UsageError(f"{self.name} with {self._described()}: the exact solution has norm 0 on the test "
                             f"grid, so {', '.join(undefined)} (an error relative to it) is undefined; choose "
                             "parameters with a non-zero solution")

    def require_finite(self, what: str, compute: Callable[[], Any]) -> None:
        """Raise a UsageError naming ``what`` and the parameters unless ``compute()`` gives only finite
        numbers (a parameter so large that the forcing overflows would otherwise only show up as a
        diverged run). Python floats raise OverflowError where numpy gives inf: both count as not finite."""
        try:
            with np.errstate(all="ignore"):
                finite = bool(np.isfinite(np.asarray(compute(), dtype=float)).all())
        except OverflowError:
            finite = False
        if not finite:
            raise UsageError(f"{self.name} with {self._described()}: {what} is not finite on the test grid; "
                             "choose smaller parameters")

    def _described(self) -> str:
        """The parameters as ``a1=0.0, a2=4.0`` (for messages)."""
        return ", ".join(f"{k}={v!r}" for k, v in self.parameters().items()) or "no parameters"

    # -- to be provided by each problem ------------------------------------------------------
    def terms(self) -> tuple[Term, ...]:
        """The loss terms, residual first; the order fixes the columns of every record."""
        raise NotImplementedError

    def exact(self, xp: Any, x: Array) -> dict[str, Array] | None:
        """Exact outputs at ``x`` (``(n, d)``) as ``{output: (n,)}``, or None without a closed form."""
        return None

    # -- shared behaviour --------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """The problem's parameters (its dataclass fields) by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def term_names(self) -> tuple[str, ...]:
        """Names of the loss terms, residual first."""
        return tuple(t.name for t in self.terms())

    def solution(self, xp: Any, x: Array, d: Mapping[str, Array]) -> Array:
        """The field the metric compares, from the derivatives in ``solution_needs``; default: u."""
        return d[self.solution_needs[0]]

    def test_grid(self) -> np.ndarray:
        """Test points ``(N, d)`` in float64: the authors' linspace grid, endpoints included."""
        return self.domain.grid(self.test_points_per_axis)

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The true value of :meth:`solution` at ``x`` (numpy, float64)."""
        exact = self.exact(np, x)
        if exact is None:
            raise NotImplementedError(f"{self.name} has no exact solution; override reference()")
        return self.solution(np, x, exact)

    def metrics(self, pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        """Error metrics of a prediction on the test grid; ``primary_metric`` is one of the keys."""
        return {"rel_l2": relative_l2(pred, ref)}

    def normalisation(self, rng: np.random.Generator, n: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
        """Input mean and standard deviation (ddof 0) of ``n`` residual points, as the authors' code.

        The authors draw these points unseeded; we draw them from ``rng`` so a seed fixes them.
        """
        x = self.domain.sample(rng, (n,))
        return x.mean(axis=0), x.std(axis=0)
