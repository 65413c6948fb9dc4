"""Klein-Gordon equation in (t, x) on [0, 1]^2: Wang, Teng & Perdikaris (2021), Sec. 3.2 (spec 5.3)."""

from __future__ import annotations

from dataclasses import dataclass
from math import pi

import numpy as np

from gradpath.problems.core import Problem, Term
from gradpath.problems.errors import UsageError
from gradpath.problems.geometry import Box

UNIT = Box((0.0, 0.0), (1.0, 1.0))


@dataclass(frozen=True, kw_only=True)
class KleinGordon(Problem):
    """u_tt + alpha u_xx + beta u + gamma u^k = f with exact solution u = x cos(5 pi t) + (x t)^3.

    Note:
        The paper states zero initial data (g1 = g2 = 0), which contradicts its own solution
        (u(0, x) = x). We follow the authors' code: u(0, x) = x and u_t(0, x) = 0 (spec 11.7).
    """

    alpha: float = -1.0
    beta: float = 0.0
    gamma: float = 1.0
    k: int = 3

    name = "klein-gordon"
    inputs = ("t", "x")  # the authors' input order
    domain = UNIT
    layers = (2, 50, 50, 50, 50, 50, 1)
    citation = "Wang, Teng & Perdikaris (2021), eqs. 49-53 and Table 3"

    def validate(self) -> None:
        """k >= 0: the exact u is 0 on the whole edge x = 0, where u^k with k < 0 (in the forcing) is infinite."""
        if self.k < 0:
            raise UsageError(f"klein-gordon k must be >= 0, got {self.k}: the exact solution is 0 on the edge x = 0, "
                             "where gamma u^k would be infinite")
        super().validate()
        self.require_finite("the forcing f", lambda: self.forcing(np, self.test_grid()))

    def exact(self, xp, x):
        t, s = x[:, 0], x[:, 1]
        return {"u": s * xp.cos(5 * pi * t) + (s * t) ** 3}

    def forcing(self, xp, x):
        t, s = x[:, 0], x[:, 1]
        u = self.exact(xp, x)["u"]
        u_tt = -25 * pi**2 * s * xp.cos(5 * pi * t) + 6 * t * s**3
        u_xx = 6 * s * t**3
        return u_tt + self.alpha * u_xx + self.beta * u + self.gamma * u**self.k

    def residual(self, xp, x, d):
        u = d["u"]
        return d["u_tt"] + self.alpha * d["u_xx"] + self.beta * u + self.gamma * u**self.k - self.forcing(xp, x)

    def initial(self, xp, x, d):
        return d["u"] - self.exact(xp, x)["u"], d["u_t"]  # MSE(u - x) + MSE(u_t), as coded

    def boundary(self, xp, x, d):
        return d["u"] - self.exact(xp, x)["u"]

    def terms(self):
        return (Term("residual", (UNIT,), ("u", "u_tt", "u_xx"), self.residual),
                Term("initial", (UNIT.face(0, "lo"),), ("u", "u_t"), self.initial),
                Term("boundary", (UNIT.face(1, "lo"), UNIT.face(1, "hi")), ("u",), self.boundary))
