"""A gradpath plugin: u_xx + u_yy = f on [0, 1]^2, manufactured solution, Dirichlet on all edges."""

from __future__ import annotations

from dataclasses import dataclass
from math import pi

from gradpath.problems import Box, Problem, Term

SQUARE = Box((0.0, 0.0), (1.0, 1.0))


@dataclass(frozen=True, kw_only=True)
class Poisson2D(Problem):
    """u = sin(a pi x) sin(b pi y) + x y, so f = -(a^2 + b^2) pi^2 sin(a pi x) sin(b pi y)."""

    a: float = 1.0
    b: float = 2.0

    name = "poisson2d"
    inputs = ("x", "y")
    domain = SQUARE
    layers = (2, 50, 50, 50, 1)
    citation = "gradpath plugin example (manufactured solution, not in the paper)"

    def exact(self, xp, x):
        s = xp.sin(self.a * pi * x[:, 0]) * xp.sin(self.b * pi * x[:, 1])
        return {"u": s + x[:, 0] * x[:, 1]}

    def forcing(self, xp, x):
        s = xp.sin(self.a * pi * x[:, 0]) * xp.sin(self.b * pi * x[:, 1])
        return -(self.a**2 + self.b**2) * pi**2 * s

    def residual(self, xp, x, d):
        return d["u_xx"] + d["u_yy"] - self.forcing(xp, x)

    def boundary(self, xp, x, d):
        return d["u"] - self.exact(xp, x)["u"]

    def terms(self):
        edges = tuple(SQUARE.face(axis, side) for axis in (0, 1) for side in ("lo", "hi"))
        return (Term("residual", (SQUARE,), ("u_xx", "u_yy"), self.residual),
                Term("boundary", edges, ("u",), self.boundary))
