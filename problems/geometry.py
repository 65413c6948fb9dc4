"""Axis-aligned boxes: the domains, edges and initial lines that problems sample from.

An edge is a degenerate box (lo == hi along one axis), exactly as the authors' ``Sampler`` does
it: x = lo + (hi - lo) * U[0, 1)^(n x d), so the fixed coordinate stays fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradpath.problems.errors import UsageError


@dataclass(frozen=True)
class Box:
    """The box [lo_0, hi_0] x ... x [lo_{d-1}, hi_{d-1}]; any side may be degenerate (lo == hi)."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.lo) != len(self.hi) or not self.lo:
            raise UsageError(f"box bounds must have one equal, non-zero length, got lo={self.lo}, hi={self.hi}")
        if any(h < l for l, h in zip(self.lo, self.hi)):
            raise UsageError(f"box upper bounds must not be below lower ones, got lo={self.lo}, hi={self.hi}")

    @property
    def dim(self) -> int:
        """Number of coordinates of a point in the box."""
        return len(self.lo)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform points of shape ``shape + (dim,)`` in float64, as the authors' sampler draws them."""
        return self.from_unit(rng.random((*shape, self.dim)))

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Map points of the unit cube (last axis = coordinates) into the box."""
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        return lo + (hi - lo) * u

    def contains(self, x: np.ndarray, tol: float = 1e-12) -> np.ndarray:
        """Boolean mask of shape ``x.shape[:-1]``: which points lie in the (closed) box."""
        return np.all((x >= np.asarray(self.lo) - tol) & (x <= np.asarray(self.hi) + tol), axis=-1)

    def face(self, axis: int, side: str) -> Box:
        """The face where coordinate ``axis`` equals its lower (``side='lo'``) or upper (``side='hi'``) bound.

        The face is a degenerate box with the same ``dim``: coordinate ``axis`` is fixed, the others
        keep their range (``axis`` counts from 0 in the order of the problem's ``inputs``). A face of
        a 1-D box is a point, and every point sampled from it is that point.

        Example:
            >>> Box((0.0, 0.0), (1.0, 2.0)).face(1, "hi")
            Box(lo=(0.0, 2.0), hi=(1.0, 2.0))
            >>> Box((0.0,), (1.0,)).face(0, "lo")
            Box(lo=(0.0,), hi=(0.0,))
        """
        value = self.lo[axis] if side == "lo" else self.hi[axis]
        lo, hi = list(self.lo), list(self.hi)
        lo[axis] = hi[axis] = value
        return Box(tuple(lo), tuple(hi))

    def grid(self, points_per_axis: int) -> np.ndarray:
        """A tensor grid of ``points_per_axis**dim`` points (``np.linspace`` per axis, endpoints included).

        The first axis varies slowest, i.e. ``grid.reshape(n, n, dim)[i, j] == (x_i, y_j)``.
        """
        axes = [np.linspace(l, h, points_per_axis) for l, h in zip(self.lo, self.hi)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.reshape(-1) for m in mesh], axis=-1)
