"""Our lid-driven cavity reference solver: published data, discrete properties, errors, disk cache."""

from __future__ import annotations

import hashlib
import re as regex

import numpy as np
import pytest

import gradpath.problems.cavity_reference as cr
from gradpath.problems.errors import UsageError

# O. Botella, R. Peyret, "Benchmark spectral results on the lid-driven cavity flow", Comput. Fluids 27
# (1998) 421-433: grid-converged Re = 100 extrema of u(0.5, y) and v(x, 0.5).
BOTELLA_PEYRET_RE100 = {"u_min": -0.2140424, "v_max": 0.1795728, "v_min": -0.2538030}


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """One cache for the module, so each (Re, n) is solved once; never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADPATH_CACHE", str(tmp_path_factory.mktemp("cavity-cache")))
        yield


def centreline_extrema(n: int) -> dict[str, float]:
    """u_min on x = 0.5 and v_max, v_min on y = 0.5 of the interpolated reference, sampled finely."""
    s = np.linspace(0.0, 1.0, 4001)
    half = np.full_like(s, 0.5)
    u = cr.velocity_at(np.c_[half, s], 100, n)[0]
    v = cr.velocity_at(np.c_[s, half], 100, n)[1]
    return {"u_min": u.min(), "v_max": v.max(), "v_min": v.min()}


def test_matches_ghia_at_re100():
    dev = cr.ghia_deviation(100, 128)
    assert dev["u_vertical"] <= 0.005
    # Ghia's own v column is off by ~0.009 near x = 0.86: their v_min -0.24533 against the grid-
    # converged -0.25380 (Botella & Peyret). Our converged solution therefore sits ~0.009 away from
    # Ghia (0.0062 at n = 64, 0.0085 at 128, 0.0091 at 256), and 0.005 cannot be met honestly.
    assert dev["v_horizontal"] <= 0.01
    assert dev["v_horizontal_at"] == pytest.approx(110 / 128)


def test_ghia_deviation_of_u_shrinks_with_the_grid():
    assert cr.ghia_deviation(100, 64)["u_vertical"] < 0.5 * cr.ghia_deviation(100, 32)["u_vertical"]


def test_extrema_converge_at_second_order_to_the_benchmark():
    extrema = {n: centreline_extrema(n) for n in (32, 64, 128)}
    errors = {n: {k: abs(v - BOTELLA_PEYRET_RE100[k]) for k, v in e.items()} for n, e in extrema.items()}
    for key in BOTELLA_PEYRET_RE100:
        assert errors[64][key] < errors[32][key] / 3 and errors[128][key] < errors[64][key] / 3, (key, errors)
        assert errors[128][key] < 1e-3
    coarse, fine = extrema[64], extrema[128]
    for key, value in BOTELLA_PEYRET_RE100.items():  # Richardson extrapolation lands on the benchmark
        assert fine[key] + (fine[key] - coarse[key]) / 3 == pytest.approx(value, abs=3e-4)


def test_boundary_values_are_exact():
    sol = cr.solve_cavity(100, 32)
    assert (sol.u[:, -1] == 1).all()  # the lid, both top corners included
    assert (sol.u[:, 0] == 0).all() and (sol.u[0, :-1] == 0).all() and (sol.u[-1, :-1] == 0).all()
    for field in (sol.v, sol.psi):
        assert (field[:, [0, -1]] == 0).all() and (field[[0, -1]] == 0).all()
    grid = np.linspace(0.0, 1.0, 100)
    x = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    u, v = (a.reshape(100, 100) for a in cr.velocity_at(x, 100, 32))
    assert (u[:, -1] == 1).all() and (u[:, 0] == 0).all() and (u[0, :-1] == 0).all() and (u[-1, :-1] == 0).all()
    assert (v[:, [0, -1]] == 0).all() and (v[[0, -1]] == 0).all()


def test_velocity_is_discretely_divergence_free_and_converged():
    sol = cr.solve_cavity(100, 32)
    h = 1 / 32
    div = (sol.u[2:, 1:-1] - sol.u[:-2, 1:-1]) / (2 * h) + (sol.v[1:-1, 2:] - sol.v[1:-1, :-2]) / (2 * h)
    assert np.abs(div).max() < 1e-10
    assert sol.residual < cr.TOL and sol.stages == (100.0,) and 3 <= sol.steps <= 8


def test_interpolation_reproduces_the_grid():
    u_grid, v_grid = cr.reference_velocity(100, 32)
    nodes = np.linspace(0.0, 1.0, 33)
    x = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), axis=-1).reshape(-1, 2)
    u, v = cr.velocity_at(x, 100, 32)
    np.testing.assert_allclose(u, u_grid.ravel(), atol=1e-12)
    np.testing.assert_allclose(v, v_grid.ravel(), atol=1e-12)


def test_re1000_converges_by_continuation():
    sol = cr.solve_cavity(1000, 64)
    assert sol.residual < cr.TOL and sol.stages[-1] == 1000 and len(sol.stages) > 1
    assert -0.40 < sol.u[32].min() < -0.33  # Ghia: -0.38289; 11% low on this coarse grid


def test_non_convergence_raises_one_line_usage_error():
    message = r"Re=100 on n=16 did not converge: residual \S+ after 1 Newton step\b"
    with pytest.raises(UsageError, match=message) as info:
        cr.solve_cavity(100, 16, max_steps=1)
    assert "\n" not in str(info.value) and "try a finer grid or a lower Re" in str(info.value)


@pytest.mark.parametrize(("re", "n", "message"), [
    (0, 32, "Re must be a finite number > 0"), (-1.0, 32, "> 0"), (float("nan"), 32, "> 0"),
    (100, 4, r"integer in \[8, 1024\]"), (100, 32.0, r"integer in \[8, 1024\]"), (100, 2048, "1024"),
    (5000, 64, r"under-resolved on n=64 .*use n >= 250"),
])
def test_invalid_arguments(re, n, message):
    with pytest.raises(UsageError, match=message):
        cr.solve_cavity(re, n)
    with pytest.raises(UsageError, match=message):
        cr.reference_velocity(re, n)


def test_points_outside_the_square_are_rejected():
    with pytest.raises(UsageError, match=r"\(m, 2\) array inside \[0, 1\]\^2"):
        cr.velocity_at(np.array([[0.5, 1.5]]), 100, 16)


@pytest.fixture
def counted_solves(tmp_path, monkeypatch):
    """A private cache directory and a list that records each real solve."""
    monkeypatch.setenv("GRADPATH_CACHE", str(tmp_path))
    calls, solve = [], cr.solve_cavity
    monkeypatch.setattr(cr, "solve_cavity", lambda re, n: calls.append((re, n)) or solve(re, n))
    return calls


def test_second_call_loads_from_disk(counted_solves, tmp_path):
    first = cr.reference_velocity(100, 16)
    second = cr.reference_velocity(100, 16)
    assert counted_solves == [(100, 16)]
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]  # the temporary file was renamed, not left


def test_file_name_carries_the_checksum_of_the_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADPATH_CACHE", str(tmp_path))
    cr.reference_velocity(100, 16)
    (path,) = tmp_path.iterdir()
    with np.load(path) as data:
        stored = str(data["inputs"])
    assert hashlib.sha256(stored.encode()).hexdigest() in path.name
    names = {cr._cache_key(re, n)[1].name for re, n in [(100, 16), (100.0, 16), (101, 16), (100, 32)]}
    assert len(names) == 3  # 100 and 100.0 are the same input
    monkeypatch.setattr(cr, "TOL", 1e-10)
    assert cr._cache_key(100, 16)[1] != path
    assert regex.fullmatch(r"cavity_re100_n16_[0-9a-f]{64}\.npz", path.name)


def test_corrupt_or_foreign_cache_file_is_recomputed(counted_solves, tmp_path):
    good = cr.reference_velocity(100, 16)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not a zip file")
    np.testing.assert_array_equal(cr.reference_velocity(100, 16)[0], good[0])
    np.savez(path, inputs=np.array("{}"), u=good[0], v=good[1])  # readable, but for other inputs
    np.testing.assert_array_equal(cr.reference_velocity(100, 16)[1], good[1])
    assert counted_solves == [(100, 16)] * 3
    cr.reference_velocity(100, 16)
    assert len(counted_solves) == 3  # the rewritten file is good again


def test_unwritable_cache_warns_and_still_returns(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GRADPATH_CACHE", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="set GRADPATH_CACHE to a writable folder"):
        u, v = cr.reference_velocity(100, 16)
    assert u.shape == v.shape == (17, 17)
