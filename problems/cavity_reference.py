"""Our own reference solution of the steady lid-driven cavity (spec 5.4 and 10), numpy + scipy only.

Unit square, lid y = 1 moving at u = 1, no slip elsewhere, in vorticity-stream function form
(u = psi_y, v = -psi_x, omega = v_x - u_y): Delta psi = -omega and psi_y omega_x - psi_x omega_y =
Delta omega / Re, psi = 0 on every wall, wall vorticity from Woods' second-order formula. Uniform
(n+1) x (n+1) grid, arrays indexed ``[i, j]`` = value at (x_i, y_j), x_i = i/n (the authors' CSV
layout, spec 10); second-order central differences; Newton's method with sparse LU from the Stokes
solution, with continuation in Re for larger Re.

Note:
    The paper's reference (spec 10) marched explicit pseudo-time to a 1e-4 change criterion with
    psi = h/2 on the lid; we solve the discrete equations to a tight residual, and keep psi = 0 on
    every wall so that the velocities are exactly divergence-free under central differences.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.interpolate import RectBivariateSpline
from scipy.sparse.linalg import splu

from gradpath.problems.cache import user_cache_dir
from gradpath.problems.errors import UsageError

SOLVER_VERSION = "cavity-psi-omega-woods-newton/1"
TOL = 1e-9  # max-norm of the row-scaled residual (units of psi and omega); roundoff sits near 1e-13
MAX_STEPS = 20  # Newton steps per continuation stage; from a good start Newton needs 4-8
RE_STEP = 400.0  # first continuation increment in Re: Newton from Stokes converges up to Re ~ 600
MAX_N = 1024  # a direct sparse LU beyond this needs more memory than a workstation has
# Largest Re/n accepted. Newton still converges far beyond it, but to a wiggly, wrong flow: at
# Re = 1000, u_min on x = 0.5 is off by 37% at Re/n = 31, 11% at 16, 3% at 8 (n = 32, 64, 128).
MAX_CELL_RE = 20.0

# Ghia, Ghia & Shin, "High-Re solutions for incompressible flow using the Navier-Stokes equations and
# a multigrid method", J. Comput. Phys. 48 (1982) 387-411, Tables I and II, Re = 100 columns
# (129 x 129 grid). Rows are (coordinate, value): u(0.5, y) and v(x, 0.5).
GHIA_RE100_U_VERTICAL = (
    (1.0000, 1.00000), (0.9766, 0.84123), (0.9688, 0.78871), (0.9609, 0.73722), (0.9531, 0.68717),
    (0.8516, 0.23151), (0.7344, 0.00332), (0.6172, -0.13641), (0.5000, -0.20581), (0.4531, -0.21090),
    (0.2813, -0.15662), (0.1719, -0.10150), (0.1016, -0.06434), (0.0703, -0.04775), (0.0625, -0.04192),
    (0.0547, -0.03717), (0.0000, 0.00000),
)
GHIA_RE100_V_HORIZONTAL = (
    (1.0000, 0.00000), (0.9688, -0.05906), (0.9609, -0.07391), (0.9531, -0.08864), (0.9453, -0.10313),
    (0.9063, -0.16914), (0.8594, -0.22445), (0.8047, -0.24533), (0.5000, 0.05454), (0.2344, 0.17527),
    (0.2266, 0.17507), (0.1563, 0.16077), (0.0938, 0.12317), (0.0781, 0.10890), (0.0703, 0.10091),
    (0.0625, 0.09233), (0.0000, 0.00000),
)


@dataclass(frozen=True)
class CavitySolution:
    """A converged cavity solution on the (n+1) x (n+1) grid x_i = y_j = i/n.

    Attributes:
        u, v, psi, omega: ``(n+1, n+1)`` arrays, ``[i, j]`` = value at (x_i, y_j). u = 1 on the whole
            lid row j = n, both top corners included (as in the authors' CSV, spec 10); psi = 0 on
            the walls; omega is 0 at the four corners (singular at the lid; no stencil reads them).
        steps: Newton steps over all continuation stages.
        residual: final max-norm of the row-scaled discrete residual.
        stages: the Re values solved on the way, the last being ``re``.
    """

    re: float
    n: int
    u: np.ndarray
    v: np.ndarray
    psi: np.ndarray
    omega: np.ndarray
    steps: int
    residual: float
    stages: tuple[float, ...]


class _Discretisation:
    """Sparse operators of the row-scaled discrete equations on one grid; unknowns z = [psi, omega].

    Rows are scaled so that each has coefficient 1 on its own unknown (the Laplacian rows by
    -h^2/4), which makes the residual read in units of psi and omega whatever n is. Only the
    convection term depends on Re, so the linear part is built once.
    """

    def __init__(self, n: int) -> None:
        self.n, self.h = n, 1.0 / n
        grid = np.zeros((n + 1, n + 1), dtype=bool)
        grid[1:-1, 1:-1] = True
        self.interior = grid.ravel()
        inner = sp.diags(self.interior.astype(float))
        eye = sp.identity(n + 1, format="csr")
        d1 = sp.diags([-1.0, 1.0], [-1, 1], shape=(n + 1, n + 1)) / (2 * self.h)
        d2 = sp.diags([1.0, -2.0, 1.0], [-1, 0, 1], shape=(n + 1, n + 1)) / self.h**2
        self.dx = (inner @ sp.kron(d1, eye)).tocsr()  # i is the outer (slow) index
        self.dy = (inner @ sp.kron(eye, d1)).tocsr()
        lap = -(self.h**2 / 4) * (inner @ (sp.kron(d2, eye) + sp.kron(eye, d2)))
        wall = sp.diags((~self.interior).astype(float))
        woods_psi, woods_omega, self.rhs = self._woods()
        self.linear = sp.bmat([[lap + wall, -(self.h**2 / 4) * inner],
                               [woods_psi, lap + wall + woods_omega]]).tocsr()
        self.scale = np.where(self.interior, self.h**2 / 4, 0.0)

    def _woods(self) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
        """Woods' wall vorticity, omega_w = -3 (psi_1 - psi_w - h dpsi/dn) / h^2 - omega_1 / 2.

        From the Taylor series of psi along the inward normal with psi_nnn ~ (psi_nn,1 - psi_nn,w)/h,
        second order; dpsi/dn is -1 on the lid (u = psi_y = 1, inward normal -y) and 0 elsewhere.
        """
        n, h, m, k = self.n, self.h, (self.n + 1) ** 2, np.arange(1, self.n)
        idx = np.arange(m).reshape(n + 1, n + 1)
        # wall nodes (corners excluded), their inner neighbours, dpsi/dn: bottom, top, left, right
        b = np.r_[idx[k, 0], idx[k, n], idx[0, k], idx[n, k]]
        b1 = np.r_[idx[k, 1], idx[k, n - 1], idx[1, k], idx[n - 1, k]]
        dpsi_dn = np.r_[np.zeros(n - 1), np.full(n - 1, -1.0), np.zeros(2 * (n - 1))]
        woods_psi = sp.csr_matrix((np.r_[np.full(b.size, -3 / h**2), np.full(b.size, 3 / h**2)],
                                   (np.r_[b, b], np.r_[b, b1])), shape=(m, m))
        woods_omega = sp.csr_matrix((np.full(b.size, 0.5), (b, b1)), shape=(m, m))
        rhs = np.zeros(2 * m)
        rhs[m + b] = 3 * dpsi_dn / h
        return woods_psi, woods_omega, rhs

    def residual(self, z: np.ndarray, re: float) -> np.ndarray:
        """F(z) with F = 0 at the discrete solution."""
        psi, omega = np.split(z, 2)
        convection = self.dy @ psi * (self.dx @ omega) - self.dx @ psi * (self.dy @ omega)
        return self.linear @ z - self.rhs + np.r_[np.zeros_like(psi), re * self.scale * convection]

    def jacobian(self, z: np.ndarray, re: float) -> sp.csc_matrix:
        """dF/dz, exact (the convection term is bilinear)."""
        psi, omega = np.split(z, 2)
        s = sp.diags(re * self.scale)
        d_psi = s @ (sp.diags(self.dx @ omega) @ self.dy - sp.diags(self.dy @ omega) @ self.dx)
        d_omega = s @ (sp.diags(self.dy @ psi) @ self.dx - sp.diags(self.dx @ psi) @ self.dy)
        return (self.linear + sp.bmat([[None, sp.csr_matrix(d_psi.shape)], [d_psi, d_omega]])).tocsc()


def _newton(system: _Discretisation, z: np.ndarray, re: float, *, tol: float,
            max_steps: int) -> tuple[np.ndarray, int, float]:
    """Damped Newton from ``z``; returns (z, steps taken, final residual max-norm).

    A full step is halved (up to 5 times) until it lowers the residual; when none does, Newton has
    stalled and we stop, leaving the caller (continuation in Re) to approach from closer. Near the
    solution the full step is always taken and convergence is quadratic.
    """
    f = system.residual(z, re)
    norm, steps = float(np.abs(f).max()), 0
    while norm > tol and steps < max_steps and math.isfinite(norm):
        delta = splu(system.jacobian(z, re)).solve(-f)
        steps += 1
        for damping in 0.5 ** np.arange(6):
            trial = z + damping * delta
            f_trial = system.residual(trial, re)
            norm_trial = float(np.abs(f_trial).max())
            if norm_trial < norm:
                break
        else:
            break  # stalled: no damped step lowers the residual
        z, f, norm = trial, f_trial, norm_trial
    return z, steps, norm if math.isfinite(norm) else math.inf


def _continuation(system: _Discretisation, re: float, *, tol: float,
                  max_steps: int) -> tuple[np.ndarray, int, float, tuple[float, ...]]:
    """Solve at ``re`` by Newton from the Stokes solution, stepping Re up when that is too far.

    Newton from Stokes converges up to Re ~ 600, so the first stage stops at RE_STEP; each
    converged stage doubles the increment, each failed one halves it (4 halvings in a row give up).

    Raises:
        UsageError: a stage did not converge.
    """
    z = splu(system.linear.tocsc()).solve(system.rhs)  # Stokes: the convection term dropped
    done, increment, total, stages, halvings = 0.0, RE_STEP, 0, [], 0
    while done < re:
        target = min(re, done + increment)
        trial, steps, norm = _newton(system, z, target, tol=tol, max_steps=max_steps)
        total += steps
        if norm <= tol:
            z, done, increment, halvings = trial, target, 2 * increment, 0
            stages.append(target)
            continue
        halvings += 1
        if halvings > 4:
            last = f"Re={done:.4g}" if done else "Stokes"
            where = f" at continuation stage Re={target:.4g} (last converged: {last})" if target != re else ""
            raise UsageError(
                f"cavity reference at Re={re:g} on n={system.n} did not converge: residual {norm:.1e} after "
                f"{steps} Newton step{'s' * (steps != 1)}{where}; try a finer grid or a lower Re")
        increment /= 2
    return z, total, norm, tuple(stages)


def check_case(re: float, n: int, *, re_name: str = "Re", n_name: str = "n") -> None:
    """Raise a UsageError unless (re, n) is a case the solver resolves (the cavity problem checks it at
    construction, naming its parameters ``Re`` and ``reference_n``)."""
    if isinstance(re, bool) or not isinstance(re, numbers.Real) or not math.isfinite(re) or re <= 0:
        raise UsageError(f"cavity {re_name} must be a finite number > 0, got {re!r}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 8 <= n <= MAX_N:
        raise UsageError(f"cavity {n_name} (grid cells per side) must be an integer in [8, {MAX_N}], got {n!r}")
    if re / n > MAX_CELL_RE:
        raise UsageError(f"cavity {re_name}={re:g} is under-resolved on {n_name}={n} (Re/n = {re / n:.3g} > "
                         f"{MAX_CELL_RE:g}, central differences give a wiggly, wrong flow); use {n_name} >= "
                         f"{math.ceil(re / MAX_CELL_RE)}")


def solve_cavity(re: float, n: int, *, tol: float = TOL, max_steps: int = MAX_STEPS) -> CavitySolution:
    """Solve the steady lid-driven cavity at Reynolds number ``re`` on the (n+1) x (n+1) grid.

    Args:
        re: Reynolds number, > 0 and at most ``MAX_CELL_RE * n`` (the paper's case is 100).
        n: intervals per side, in [8, MAX_N]; the paper's reference used n = 128 (spec 10).
        tol: the discrete residual (row-scaled max-norm) must fall below this.
        max_steps: Newton steps allowed per continuation stage.

    Returns:
        The converged solution, with velocities u = psi_y, v = -psi_x by central differences,
        which makes the central-difference divergence u_x + v_y vanish at every interior node.

    Raises:
        UsageError: invalid arguments, or Newton did not converge (never a silently wrong result).

    Example:
        >>> sol = solve_cavity(100, 32)
        >>> sol.u.shape, float(sol.u[16, 32]), sol.residual < TOL
        ((33, 33), 1.0, True)
    """
    check_case(re, n)
    if not (tol > 0 and isinstance(max_steps, int) and max_steps > 0):
        raise UsageError(f"tol must be > 0 and max_steps a positive integer, got {tol!r} and {max_steps!r}")
    system = _Discretisation(n)
    z, steps, norm, stages = _continuation(system, float(re), tol=tol, max_steps=max_steps)
    psi, omega = (a.reshape(n + 1, n + 1) for a in np.split(z, 2))
    psi[~system.interior.reshape(psi.shape)] = 0.0  # the LU leaves ~1e-27 where the BC says exactly 0
    u = (system.dy @ psi.ravel()).reshape(n + 1, n + 1)  # 0 on the walls: rows there are empty
    v = -(system.dx @ psi.ravel()).reshape(n + 1, n + 1)
    u[:, n] = 1.0
    return CavitySolution(float(re), n, u, v, psi, omega, steps, norm, stages)


def cache_dir() -> Path:
    """Where reference solutions are cached: gradpath's user cache folder (:mod:`gradpath.problems.cache`)."""
    return user_cache_dir()


def _cache_key(re: float, n: int) -> tuple[str, Path]:
    """The canonical inputs (JSON) and the cache file named by their sha256."""
    inputs = json.dumps({"solver": SOLVER_VERSION, "re": float(re), "n": int(n), "tol": TOL,
                         "max_steps": MAX_STEPS, "re_step": RE_STEP}, sort_keys=True)
    digest = hashlib.sha256(inputs.encode()).hexdigest()
    return inputs, cache_dir() / f"cavity_re{float(re):g}_n{int(n)}_{digest}.npz"


def _load(path: Path, inputs: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (u, v), or None when the file is missing, corrupt or for other inputs."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stored, u, v = str(data["inputs"]), data["u"], data["v"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    ok = stored == inputs and u.shape == v.shape == (n + 1, n + 1) and np.isfinite(u).all() and np.isfinite(v).all()
    return (u, v) if ok else None


def _save(path: Path, inputs: str, sol: CavitySolution) -> None:
    """Write atomically: a reader sees either no file or a complete one, never a partial write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, inputs=np.array(inputs), u=sol.u, v=sol.v, psi=sol.psi,
                     steps=sol.steps, residual=sol.residual)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reference_velocity(re: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) on the (n+1) x (n+1) grid, solved once and then read from the disk cache.

    The cache file's name carries the sha256 of the inputs (solver version, re, n, tolerances), and
    the inputs are stored inside and checked on load; a corrupt or mismatching file is recomputed.

    Raises:
        UsageError: as :func:`solve_cavity`.
    """
    check_case(re, n)
    inputs, path = _cache_key(re, n)
    cached = _load(path, inputs, n)
    if cached is not None:
        return cached
    sol = solve_cavity(re, n)
    try:
        _save(path, inputs, sol)
    except OSError as exc:  # the solution is right; only the cache is lost, so do not fail the run
        warnings.warn(f"cannot cache the cavity reference in {path.parent} ({exc}); set GRADPATH_CACHE to a "
                      "writable folder", RuntimeWarning, stacklevel=2)
    return sol.u, sol.v


def velocity_at(x: np.ndarray, re: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate the cached reference (u, v) to points ``x`` of shape (m, 2) in [0, 1]^2.

    Bicubic interpolating splines through the grid values; points on a wall get the exact wall
    velocity, because the spline rings next to the lid corners, where u jumps from 1 to 0.

    Returns:
        u, v, each ``(m,)``.

    Example:
        >>> grid = np.stack(np.meshgrid(np.linspace(0, 1, 100), np.linspace(0, 1, 100), indexing="ij"), -1)
        >>> u, v = velocity_at(grid.reshape(-1, 2), 100, 128)  # doctest: +SKIP
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] != 2 or not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise UsageError(f"cavity points must be an (m, 2) array inside [0, 1]^2, got shape {x.shape}")
    u_grid, v_grid = reference_velocity(re, n)
    nodes = np.linspace(0.0, 1.0, n + 1)
    u, v = (RectBivariateSpline(nodes, nodes, a, kx=3, ky=3, s=0).ev(x[:, 0], x[:, 1]) for a in (u_grid, v_grid))
    on_wall = (x == 0).any(axis=1) | (x == 1).any(axis=1)
    u[on_wall] = (x[on_wall, 1] == 1).astype(float)  # u = 1 on the lid, corners included
    v[on_wall] = 0.0
    return u, v


def ghia_deviation(re: float = 100.0, n: int = 128) -> dict[str, float]:
    """Max |deviation| of the cached reference from Ghia et al. (1982) on the two centrelines.

    Ghia's coordinates are nodes k/128 of their 129 x 129 grid printed to 4 decimals; we evaluate
    at k/128 itself, so a grid with n a multiple of 128 is compared node for node.

    Returns:
        ``u_vertical`` = max |u(0.5, y) - Ghia| and ``v_horizontal`` = max |v(x, 0.5) - Ghia|, with
        the coordinates where they occur (``u_vertical_at``, ``v_horizontal_at``).

    Raises:
        UsageError: ``re`` is not 100 (the only Ghia column stored here), or as :func:`solve_cavity`.

    Note:
        Ghia's own Re = 100 values are not grid-converged: their v_min -0.24533 against -0.25380 of
        Botella & Peyret (Comput. Fluids 27, 1998), so a converged solution sits ~0.009 from Ghia in v
        near x = 0.86 (u agrees within 0.005). Our extrema converge at second order to the latter.
    """
    if re != 100:
        raise UsageError(f"Ghia et al. data are stored for Re=100 only, got Re={re!r}")
    out: dict[str, float] = {}
    lines = (("u_vertical", GHIA_RE100_U_VERTICAL, 1, 0), ("v_horizontal", GHIA_RE100_V_HORIZONTAL, 0, 1))
    for name, table, axis, component in lines:
        coord, value = np.array(table).T
        coord = np.round(coord * 128) / 128  # back to Ghia's exact grid node
        points = np.full((coord.size, 2), 0.5)
        points[:, axis] = coord
        error = np.abs(velocity_at(points, re, n)[component] - value)
        worst = int(np.argmax(error))
        out[name], out[f"{name}_at"] = float(error[worst]), float(coord[worst])
    return out
