"""Gradient-pathology diagnostics: statistics, histograms, Hessian products and eigenvalues, presets."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from backends import get_backend
from backends.data import draw_batches, seed_streams
from backends.diagnostics import (N_BINS, GradientRecord, bin_edges, dense_matrix, dense_spectrum,
                                  gradient_histograms, gradient_statistics, hessian_operator,
                                  histogram_quantile, lanczos,
                                  largest_eigenvalue, parameter_keys, power_iteration, weighted)
from backends.init import init_params
from backends.settings import TrainSettings
from problems import get_problem
from problems.errors import UsageError
from suite.record import GRADIENTS, load_gradients, save_gradients

BOTH = pytest.mark.skipif(not (importlib.util.find_spec("jax") and importlib.util.find_spec("torch")),
                          reason="needs both jax and torch")


def _setup(problem="helmholtz", net="mlp", width=8, batch=16, seed=0, **parameters):
    p = get_problem(problem, **parameters)
    streams = seed_streams(seed)
    params = init_params((len(p.inputs), width, width, 1), net, streams["init"])
    mu, sigma = p.normalisation(streams["normalisation"])
    points = [b[0] for b in draw_batches(p, streams["batches"], 1, batch, "float64")]
    return p, params, mu, sigma, points


def _reference_hessian(backend, p, params, mu, sigma, points, weights, keys, net):
    """The dense Hessian by reverse-over-reverse autodiff: independent of the HVP's forward-over-reverse."""
    from backends.losses import term_losses
    flat = np.concatenate([params[k].ravel() for k in keys])
    sizes = [params[k].size for k in keys]
    if backend == "jax":
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)

        def loss(x):
            q = {k: jnp.asarray(v) for k, v in params.items()}
            q.update({k: jnp.reshape(part, params[k].shape)
                      for k, part in zip(keys, jnp.split(x, np.cumsum(sizes)[:-1].tolist()))})
            return jnp.dot(jnp.asarray(weights), term_losses(jnp, p, q, [jnp.asarray(b) for b in points],
                                                              jnp.asarray(mu), jnp.asarray(sigma), net=net, gate="code"))

        return np.asarray(jax.jit(jax.jacrev(jax.jacrev(loss)))(jnp.asarray(flat)))
    import array_api_compat.torch as xp
    import torch

    def loss(x):
        q = {k: torch.as_tensor(v) for k, v in params.items()}
        q.update({k: torch.reshape(part, params[k].shape) for k, part in zip(keys, torch.split(x, sizes))})
        return torch.dot(torch.tensor(weights, dtype=torch.float64), term_losses(xp, p, q, [torch.as_tensor(b) for b in points],
                                                             torch.as_tensor(mu), torch.as_tensor(sigma), net=net,
                                                             gate="code"))

    return torch.autograd.functional.hessian(loss, torch.as_tensor(flat)).numpy()


def test_hessian_products_match_the_dense_hessian_and_lanczos_matches_eigvalsh(backend):
    # the gated net: the products are net-agnostic, and its loss exercises the most jet code
    net = "gated"
    p, params, mu, sigma, points = _setup(net=net, width=5)
    weights = [1.0, 2.5]
    op = hessian_operator(backend, p, params, mu, sigma, points, weights, parameter_set="weights", net=net)
    reference = _reference_hessian(backend, p, params, mu, sigma, points, weights, op.keys, net)
    # every column of the identity at once: H e_j against the reverse-over-reverse Hessian
    np.testing.assert_allclose(dense_matrix(op.matmat, op.n, block=op.n), reference, rtol=1e-10,
                               atol=1e-10 * np.abs(reference).max())
    exact = np.linalg.eigvalsh(reference)
    assert exact[-1] > 0
    ritz, top = lanczos(op.matmat, op.n, iterations=op.n)
    assert top.value == pytest.approx(exact[-1], rel=1e-8)
    assert top.products < op.n  # converged before spanning the whole space
    np.testing.assert_allclose(dense_spectrum(op.matmat, op.n, block=op.n), exact, rtol=1e-9,
                               atol=1e-9 * np.abs(exact).max())


def test_power_iteration_and_lanczos_on_a_known_matrix():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    values = np.concatenate([[50.0, 20.0], rng.uniform(-5, 5, 58)])
    h = (q * values) @ q.T
    assert power_iteration(lambda v: h @ v, 60, tol=1e-12).value == pytest.approx(50.0, rel=1e-9)
    assert largest_eigenvalue(lambda v: h @ v, 60).value == pytest.approx(50.0, rel=1e-9)
    np.testing.assert_allclose(dense_matrix(lambda v: h @ v, 60, block=7), h, atol=1e-12)
    with pytest.raises(UsageError, match="choose one of: lanczos, power"):
        largest_eigenvalue(lambda v: h @ v, 60, method="arnoldi")


@pytest.mark.parametrize("net, weights_only, everything", [("mlp", 4 + 16 + 4, 4 + 16 + 4 + 9),
                                                             ("gated", 4 + 16 + 4, 4 + 16 + 4 + 9 + 16)])
def test_the_parameter_set_selects_the_dimension(net, weights_only, everything):
    p, params, mu, sigma, points = _setup(problem="poisson1d", net=net, width=4)
    backend = "torch" if importlib.util.find_spec("torch") else "jax"  # eager torch: nothing to compile
    assert parameter_keys(params, "weights") == ["W0", "W1", "W2"]
    keys = parameter_keys(params, "all")
    assert keys[:6] == ["W0", "b0", "W1", "b1", "W2", "b2"] and sorted(keys) == sorted(params)
    for parameter_set, n in (("weights", weights_only), ("all", everything)):
        op = hessian_operator(backend, p, params, mu, sigma, points, [1.0, 1.0], parameter_set=parameter_set, net=net,
                              term="residual")
        assert op.n == n == sum(params[k].size for k in op.keys)
        assert op.matmat(np.eye(n)[:, :2]).shape == (n, 2)
    with pytest.raises(UsageError, match="choose one of: all, weights"):
        parameter_keys(params, "biases")
    with pytest.raises(UsageError, match="choose one of: boundary, residual, total"):
        hessian_operator(backend, p, params, mu, sigma, points, [1.0, 1.0], term="initial")


def test_histograms_count_every_entry_and_statistics_are_per_layer():
    rng = np.random.default_rng(0)
    extreme = np.array([0.0, 1e-30, -1e-30, 1e12, -1e12, 1e4, -1e4, 3.0, np.inf, -np.inf])
    grads = [{"W0": rng.standard_normal((3, 4)), "W1": np.concatenate([rng.standard_normal(90) * 1e-6, extreme])},
             {"W0": rng.standard_normal((3, 4)) * 1e-3, "W1": rng.standard_normal(100)}]
    counts = gradient_histograms(grads, ["W0", "W1"])
    assert counts.shape == (2, 2, N_BINS) and len(bin_edges()) == N_BINS + 1
    np.testing.assert_array_equal(counts.sum(axis=2), [[12, 100], [12, 100]])
    assert counts[0, 1, 0] == 2 and counts[0, 1, -1] == 3  # below -1e4; at or above 1e4
    stats = gradient_statistics(weighted(grads, [1.0, 2.0]), ("residual", "boundary"), ["W0", "W1"])
    assert stats["grad_max_residual_W0"] == np.abs(grads[0]["W0"]).max()
    assert stats["grad_mean_boundary_W1"] == pytest.approx(2 * np.abs(grads[1]["W1"]).mean())
    assert stats["grad_ratio_boundary_W0"] == pytest.approx(np.abs(grads[0]["W0"]).mean()
                                                            / (2 * np.abs(grads[1]["W0"]).mean()))
    lambda_hat = np.inf / np.mean([2 * np.abs(grads[1][k]).mean() for k in ("W0", "W1")])
    assert stats["grad_lambda_hat_boundary"] == lambda_hat


def test_histogram_quantiles_read_magnitudes_to_one_bin():
    # 99% of the entries at |g| = 5e-3 (either sign), 1% at 1.0; a bin spans a sixteenth of a decade
    values = np.concatenate([np.full(495, 5e-3), np.full(495, -5e-3), np.full(10, 1.0)])
    counts = gradient_histograms([{"W0": values}], ["W0"])[0, 0]
    step = 10 ** (1 / 16)
    assert 5e-3 <= histogram_quantile(counts, 0.99) <= 5e-3 * step
    assert 1.0 <= histogram_quantile(counts, 0.995) <= step
    with pytest.raises(ValueError, match="empty histogram"):
        histogram_quantile(np.zeros(N_BINS), 0.5)
    with pytest.raises(ValueError, match="must lie in"):
        histogram_quantile(counts, 0.0)


def test_the_gradient_record_round_trips(tmp_path):
    record = GradientRecord(("residual", "boundary"), ("W0", "W1"), (12, 100))
    rng = np.random.default_rng(3)
    for step in (0, 10, 20):
        record.add(step, [1.0, 1.5 + step], rng.integers(0, 9, (2, 2, N_BINS)))
    save_gradients(tmp_path, record)
    back = load_gradients(tmp_path / GRADIENTS)
    assert (back.terms, back.keys, back.sizes, back.steps) == (record.terms, record.keys, record.sizes, [0, 10, 20])
    np.testing.assert_array_equal(np.array(back.counts), np.array(record.counts))
    np.testing.assert_array_equal(np.array(back.weights), np.array(record.weights))
    assert load_gradients(tmp_path).steps == [0, 10, 20]


@BOTH
def test_jax_and_torch_give_the_same_statistics_and_sigma_max():
    p, params, mu, sigma, points = _setup(problem="helmholtz", batch=32, width=6)
    settings = TrainSettings(width=6, depth=2, dtype="float64", compile=False, device="cpu")
    out = {}
    for backend in ("jax", "torch"):
        trainer = get_backend(backend).trainer(p, settings, "cpu")
        state = trainer.init(params, mu, sigma)
        _, grads = trainer.gradients(state, points)
        grads = weighted(grads, [1.0, 3.0])
        keys = parameter_keys(params, "weights")
        sigmas = [hessian_operator(backend, p, params, mu, sigma, points, [1.0, 3.0], term=t) for t in
                  ("total", "boundary")]
        out[backend] = (gradient_statistics(grads, p.term_names(), keys), gradient_histograms(grads, keys),
                        [largest_eigenvalue(op.matmat, op.n).value for op in sigmas])
    (sj, hj, ej), (st, ht, et) = out["jax"], out["torch"]
    assert sj.keys() == st.keys()
    for k in sj:
        assert st[k] == pytest.approx(sj[k], rel=1e-11), k
    assert np.abs(hj - ht).sum() <= 2  # an entry within rounding of a bin edge may change bins
    np.testing.assert_allclose(et, ej, rtol=1e-10)


def test_a_preset_runs_end_to_end_and_writes_its_report(tmp_path):
    from suite.diagnostic_report import write_report
    from suite.diagnostics import Experiment, RunPlan, load_run, run_one

    experiment = Experiment("fig5", "a small fig5", (RunPlan("C=1", "poisson1d", {"C": 1.0}),
                                                     RunPlan("C=2", "poisson1d", {"C": 2.0})),
                            steps=30, batch_size=16, gradient_every=20, hessian_every=20, width=6, depth=2,
                            hessian_terms=("total",), spectrum_terms=("residual",))
    backend = "jax" if importlib.util.find_spec("jax") else "torch"
    results = [run_one(experiment, plan, tmp_path, backend=backend, quiet=True) for plan in experiment.runs]
    history = results[0]["history"]
    assert [row["step"] for row in history if "sigma_max_total" in row] == [0, 20, 30]
    assert [row["step"] for row in history if "grad_max_residual_W0" in row] == [0, 20, 30]
    assert [row["step"] for row in history] == [0, 20, 30]  # chunks of gcd(100, 20, 20) steps
    record = load_gradients(tmp_path / "C-1")
    assert record.steps == [0, 20, 30]
    np.testing.assert_array_equal(np.array(record.counts).sum(axis=3)[-1], [[6, 36, 6]] * 2)
    assert len(results[0]["spectra"]["residual"]) == 6 + 36 + 6
    files = write_report(experiment, results, tmp_path, backend=backend, seed=0, parameter_set="weights")
    assert {f.name for f in files} >= {"fig5-gradient-histograms.png", "fig5-sigma-max.png", "fig5-spectra.png",
                                       "numbers.json", "README.md"}
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    ratio = numbers["sigma_max"]["total"]
    a, b = (np.array([row["sigma_max_total"] for row in r["history"] if "sigma_max_total" in row]) for r in results)
    assert ratio["last_ratio"] == pytest.approx(a[-1] / b[-1])
    assert ratio["geometric_mean_ratio"] == pytest.approx(np.exp(np.mean(np.log(a / b))))
    # --report-only reads the runs back: the same numbers
    again = [load_run(experiment, plan, tmp_path) for plan in experiment.runs]
    write_report(experiment, again, tmp_path / "again", backend=backend, seed=0, parameter_set="weights")
    assert json.loads((tmp_path / "again" / "numbers.json").read_text())["sigma_max"] == numbers["sigma_max"]
    from suite.cli import main
    assert main(["diagnose", "histograms", str(tmp_path / "C-1"), str(tmp_path / "C-2"), "--step", "20",
                 "--out", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").stat().st_size > 0


def test_the_diagnose_command_refuses_bad_input(capsys):
    from suite.cli import main

    assert main(["diagnose", "fig6"]) == 2
    assert "unknown diagnostics preset 'fig6'; choose one of: fig11, fig3, fig4, fig5" in capsys.readouterr().err
    assert main(["diagnose", "fig3", "--parameter-set", "biases", "--steps", "5", "--quiet"]) == 2
    assert "unknown parameter set 'biases'; choose one of: all, weights" in capsys.readouterr().err
    assert main(["diagnose", "fig3", "--backend", "tf"]) == 2
    assert "choose one of: jax, torch" in capsys.readouterr().err
    assert main(["diagnose", "histograms"]) == 2
    assert "at least one run directory" in capsys.readouterr().err


def test_training_records_gradients_per_seed_also_when_seeds_are_vectorised():
    from backends.training import train, train_seeds

    p = get_problem("poisson1d")
    settings = [TrainSettings(width=5, depth=2, steps=50, log_every=20, batch_size=16, dtype="float64", seed=s,
                              device="cpu") for s in (0, 1)]
    backend = "jax" if importlib.util.find_spec("jax") else "torch"
    together = train_seeds(p, settings, backend, gradient_every=40)
    alone = train(p, settings[1], backend, gradient_every=40)
    for result in (*together, alone):
        steps = [row["step"] for row in result.history if np.isfinite(row["grad_max_residual_W0"])]
        assert steps == result.gradients.steps == [40, 50]  # the first row at or past 40, and the last
        assert all(np.isnan(row["grad_mean_boundary_W1"]) for row in result.history if row["step"] == 20)
        np.testing.assert_array_equal(np.array(result.gradients.counts).sum(axis=3)[0], [[5, 25, 5]] * 2)
    a, b = together[1].history[-1], alone.history[-1]
    for key in (k for k in b if k.startswith("grad_")):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key
