"""1-D Poisson example of Fig. 3: Wang, Teng & Perdikaris (2021), Sec. 2.3 and App. 5.1 (spec 5.1)."""

from __future__ import annotations

from dataclasses import dataclass

from gradpath.problems.core import Problem, Term
from gradpath.problems.geometry import Box

INTERVAL = Box((0.0,), (1.0,))


@dataclass(frozen=True, kw_only=True)
class Poisson1D(Problem):
    """u_xx = g on [0, 1] with u = sin(C x) and Dirichlet data at both ends.

    The paper gives no network or batch for this example; we use the Helmholtz settings
    (three hidden layers of 50, batch 128 per term), as the spec presumes.
    """

    C: float = 1.0

    name = "poisson1d"
    inputs = ("x",)
    domain = INTERVAL
    layers = (1, 50, 50, 50, 1)
    test_points_per_axis = 1000
    citation = "Wang, Teng & Perdikaris (2021), eq. 13 and Fig. 3"

    def validate(self) -> None:
        """C non-zero (else u = 0 and the relative error is undefined) and C^2 (in the forcing) finite."""
        super().validate()
        self.require_finite("the forcing C^2 sin(C x)", lambda: self.C**2)

    def exact(self, xp, x):
        return {"u": xp.sin(self.C * x[:, 0])}

    def residual(self, xp, x, d):
        return d["u_xx"] + self.C**2 * xp.sin(self.C * x[:, 0])

    def boundary(self, xp, x, d):
        return d["u"] - self.exact(xp, x)["u"]

    def terms(self):
        return (Term("residual", (INTERVAL,), ("u_xx",), self.residual),
                # eq. 13: one mean over all boundary points, i.e. half the sum of the two ends' means
                Term("boundary", (INTERVAL.face(0, "lo"), INTERVAL.face(0, "hi")), ("u",), self.boundary, 0.5))
