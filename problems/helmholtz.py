"""Helmholtz equation on [-1, 1]^2: Wang, Teng & Perdikaris (2021), Sec. 2.2 and 3.1 (spec 5.2)."""

from __future__ import annotations

from dataclasses import dataclass
from math import pi

import numpy as np

from gradpath.problems.core import Problem, Term
from gradpath.problems.geometry import Box

SQUARE = Box((-1.0, -1.0), (1.0, 1.0))


@dataclass(frozen=True, kw_only=True)
class Helmholtz(Problem):
    """u_xx + u_yy + k^2 u = q with exact solution u = sin(a1 pi x) sin(a2 pi y), u = exact on the edges.

    a2 = 4 is the paper's stiff case (Table 2), a2 = 1 the non-stiff one of Fig. 5.
    """

    a1: float = 1.0
    a2: float = 4.0
    k: float = 1.0

    name = "helmholtz"
    inputs = ("x", "y")
    domain = SQUARE
    layers = (2, 50, 50, 50, 1)  # the authors' code; the paper calls it "4-layer" (spec 4.4)
    citation = "Wang, Teng & Perdikaris (2021), eqs. 8-10 and Table 2"

    def validate(self) -> None:
        """a1, a2 non-zero (else u = 0 and the relative error is undefined) and a forcing that does not overflow."""
        super().validate()
        self.require_finite("the forcing q", lambda: self.forcing(np, self.test_grid()))

    def exact(self, xp, x):
        return {"u": xp.sin(self.a1 * pi * x[:, 0]) * xp.sin(self.a2 * pi * x[:, 1])}

    def forcing(self, xp, x):
        """q = (k^2 - (a1^2 + a2^2) pi^2) u_exact."""
        return (self.k**2 - (self.a1**2 + self.a2**2) * pi**2) * self.exact(xp, x)["u"]

    def residual(self, xp, x, d):
        return d["u_xx"] + d["u_yy"] + self.k**2 * d["u"] - self.forcing(xp, x)

    def boundary(self, xp, x, d):
        return d["u"] - self.exact(xp, x)["u"]

    def terms(self):
        # edge order of the authors' code: y = -1, x = +1, y = +1, x = -1
        edges = (SQUARE.face(1, "lo"), SQUARE.face(0, "hi"), SQUARE.face(1, "hi"), SQUARE.face(0, "lo"))
        return (Term("residual", (SQUARE,), ("u", "u_xx", "u_yy"), self.residual),
                Term("boundary", edges, ("u",), self.boundary))
