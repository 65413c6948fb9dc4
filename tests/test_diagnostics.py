"""Gradient-pathology diagnostics: statistics, histograms, Hessian products and eigenvalues, presets."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from gradpath.backends import get_backend
from gradpath.backends.data import draw_batches, seed_streams
from gradpath.backends.diagnostics import (N_BINS, GradientRecord, bin_edges, dense_matrix, dense_spectrum,
                                  gradient_histograms, gradient_statistics, hessian_operator,
                                  histogram_quantile, lanczos,
                                  largest_eigenvalue, parameter_keys, power_iteration, weighted)
from gradpath.backends.init import init_params
from gradpath.backends.settings import TrainSettings
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError
from gradpath.suite.runs.record import GRADIENTS, load_gradients, save_gradients

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
    from gradpath.backends.losses import term_losses
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
    from gradpath.suite.diagnostics.report import write_diagnostics_report as write_report
    from gradpath.suite.diagnostics.experiments import Experiment, RunPlan, load_run, train_plan

    experiment = Experiment("fig5", "a small fig5", (RunPlan("C=1", "poisson1d", {"C": 1.0}),
                                                     RunPlan("C=2", "poisson1d", {"C": 2.0})),
                            steps=30, batch_size=16, gradient_every=20, hessian_every=20, width=6, depth=2,
                            hessian_terms=("total",), spectrum_terms=("residual",))
    backend = "jax" if importlib.util.find_spec("jax") else "torch"
    results = [train_plan(experiment, plan, tmp_path, backend=backend, quiet=True) for plan in experiment.runs]
    history = results[0]["history"]
    assert [row["step"] for row in history if "sigma_max_total" in row] == [0, 20, 30]
    assert [row["step"] for row in history if "grad_max_residual_W0" in row] == [0, 20, 30]
    assert [row["step"] for row in history] == [0, 20, 30]  # chunks of gcd(100, 20, 20) steps
    record = load_gradients(tmp_path / "C-1")
    assert record.steps == [0, 20, 30]
    np.testing.assert_array_equal(np.array(record.counts).sum(axis=3)[-1], [[6, 36, 6]] * 2)
    assert len(results[0]["spectra"]["residual"]) == 6 + 36 + 6
    files = write_report(experiment, results, tmp_path, backend=backend, parameter_set="weights")
    assert {f.name for f in files} >= {"fig5-gradient-histograms.png", "fig5-sigma-max.png", "fig5-spectra.png",
                                       "fig5-losses.png", "numbers.json", "README.md"}
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    ratio = numbers["per_seed"]["0"]["sigma_max"]["total"]
    a, b = (np.array([row["sigma_max_total"] for row in r["history"] if "sigma_max_total" in row]) for r in results)
    assert ratio["last_ratio"] == pytest.approx(a[-1] / b[-1])
    assert ratio["geometric_mean_ratio"] == pytest.approx(np.exp(np.mean(np.log(a / b))))
    # --report-only reads the runs back: the same numbers
    again = [load_run(experiment, plan, tmp_path) for plan in experiment.runs]
    write_report(experiment, again, tmp_path / "again", backend=backend, parameter_set="weights")
    assert json.loads((tmp_path / "again" / "numbers.json").read_text())["per_seed"] == numbers["per_seed"]
    from gradpath.suite.cli.commands import main
    assert main(["diagnose", "histograms", str(tmp_path / "C-1"), str(tmp_path / "C-2"), "--step", "20",
                 "--out", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").stat().st_size > 0


def test_the_diagnose_command_refuses_bad_input(capsys):
    from gradpath.suite.cli.commands import main

    assert main(["diagnose", "fig6"]) == 2
    assert "unknown diagnostics preset 'fig6'; choose one of: fig11, fig3, fig4, fig5" in capsys.readouterr().err
    assert main(["diagnose", "fig3", "--parameter-set", "biases", "--steps", "5", "--quiet"]) == 2
    assert "unknown parameter set 'biases'; choose one of: all, weights" in capsys.readouterr().err
    assert main(["diagnose", "fig3", "--backend", "tf"]) == 2
    assert "choose one of: jax, torch" in capsys.readouterr().err
    assert main(["diagnose", "histograms"]) == 2
    assert "at least one run directory" in capsys.readouterr().err
    assert main(["diagnose", "fig5", "--seeds", "0", "-1"]) == 2
    assert "distinct non-negative integers, got 0 -1" in capsys.readouterr().err
    assert main(["diagnose", "fig5", "--seeds", "1", "1"]) == 2
    assert "distinct non-negative integers, got 1 1" in capsys.readouterr().err
    assert main(["diagnose", "fig5", "--seed", "1", "--seeds", "2"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_training_records_gradients_per_seed_also_when_seeds_are_vectorised():
    from gradpath.backends.training import train, train_seeds

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


# -- several seeds, resuming, and the numbers the reports compute --------------------------------------


def _tiny(name="fig5"):
    """A preset of two short runs per seed, small enough to train in seconds."""
    from gradpath.suite.diagnostics.experiments import Experiment, RunPlan

    return Experiment(name, "a small preset", (RunPlan("C=1", "poisson1d", {"C": 1.0}),
                                               RunPlan("C=2", "poisson1d", {"C": 2.0})),
                      steps=20, batch_size=16, gradient_every=10, hessian_every=10, width=5, depth=2,
                      hessian_terms=("total",), seeds=(0, 1))


def test_seeds_are_run_directories_and_a_complete_seed_is_not_trained_again(tmp_path, monkeypatch):
    from gradpath.suite.diagnostics import experiments as diagnostics
    from gradpath.suite.diagnostics.experiments import run_directory, run_experiment

    monkeypatch.setitem(diagnostics.EXPERIMENTS, "fig5", _tiny())
    trained = []
    original = diagnostics.train_plan

    def spy(experiment, plan, out, **options):
        trained.append((plan.label, options["seed"]))
        return original(experiment, plan, out, **options)

    monkeypatch.setattr(diagnostics, "train_plan", spy)
    backend = "jax" if importlib.util.find_spec("jax") else "torch"
    out = run_experiment("fig5", backend=backend, out=tmp_path, quiet=True)  # the preset's seeds: 0 and 1
    assert trained == [("C=1", 0), ("C=2", 0), ("C=1", 1), ("C=2", 1)]
    # the runs, and the store's locks (two processes must never train one run)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [".locks", "C-1", "C-1-seed-1", "C-2",
                                                                       "C-2-seed-1"]
    assert run_directory(tmp_path, _tiny().runs[0], 1) == tmp_path / "C-1-seed-1"
    assert json.loads((tmp_path / "C-2-seed-1" / "summary.json").read_text())["seed"] == 1
    # different seeds train different networks
    first, second = (np.load(tmp_path / d / "params.npz")["W0"] for d in ("C-1", "C-1-seed-1"))
    assert not np.allclose(first, second)
    numbers = json.loads((out / "numbers.json").read_text())
    assert numbers["seeds"] == [0, 1] and numbers["missing_seeds"] == []
    # each seed's ratio from its own histories; the headline is their median
    ratios = {}
    for seed in (0, 1):
        a, b = (pd.read_csv(run_directory(tmp_path, plan, seed) / "history.csv")["sigma_max_total"].dropna()
                for plan in _tiny().runs)
        ratios[seed] = np.exp(np.mean(np.log(a.to_numpy() / b.to_numpy())))
    key = "sigma_max C=1/C=2 (geometric mean over checkpoints)"
    spread = numbers["spread"][key]
    assert spread["per_seed"] == {str(s): pytest.approx(r) for s, r in ratios.items()}
    assert spread["median"] == pytest.approx(np.median(list(ratios.values())))
    assert (spread["min"], spread["max"]) == (pytest.approx(min(ratios.values())), pytest.approx(max(ratios.values())))
    assert numbers["headline"][key] == spread["median"]
    readme = (out / "README.md").read_text()
    assert "--seeds 0 1" in readme and "| median | min | max | seed 0 | seed 1 |" in readme
    # one more seed: only its runs are trained, the complete ones are read back
    trained.clear()
    run_experiment("fig5", backend=backend, out=tmp_path, seeds=[0, 1, 2], quiet=True)
    assert trained == [("C=1", 2), ("C=2", 2)]
    assert json.loads((out / "numbers.json").read_text())["seeds"] == [0, 1, 2]
    # --report-only trains nothing and names the seeds it lacks; a seed with half its runs is lacking too
    trained.clear()
    (tmp_path / "C-2-seed-3").mkdir()
    shutil.copytree(tmp_path / "C-1-seed-2", tmp_path / "C-1-seed-3")
    run_experiment("fig5", backend=backend, out=tmp_path, seeds=[0, 1, 2, 3], quiet=True, report_only=True)
    numbers = json.loads((out / "numbers.json").read_text())
    assert trained == [] and numbers["seeds"] == [0, 1, 2] and numbers["missing_seeds"] == [3]
    assert "without complete runs, left out of every number and figure: 3" in (out / "README.md").read_text()
    # a stored run of other length is never overwritten
    with pytest.raises(UsageError, match="holds a run of 20 steps, not 30; pass the same --steps or another --out"):
        run_experiment("fig5", backend=backend, out=tmp_path, steps=30, seeds=[0], quiet=True)


def test_a_diagnostics_run_is_an_ordinary_run_record_that_resumes_and_is_not_trained_twice(tmp_path, monkeypatch):
    """Diagnostics train through the campaign job's path: config, manifest and a summary with its status;
    a killed run goes on from its checkpoint, and a finished one is read back, never trained again."""
    from gradpath.backends import training
    from gradpath.suite.diagnostics import experiments as diagnostics
    from gradpath.suite.runs import job, recording
    from gradpath.suite.runs.record import CHECKPOINT, CONFIG, MANIFEST, SUMMARY
    from gradpath.suite.runs.store import Store

    experiment = _tiny()
    monkeypatch.setitem(diagnostics.EXPERIMENTS, "fig5", experiment)
    backend = "jax" if importlib.util.find_spec("jax") else "torch"
    plan = experiment.runs[0]
    whole = diagnostics.train_plan(experiment, plan, tmp_path / "whole", backend=backend, quiet=True)
    # killed after its checkpoint at step 10, then run again: it goes on from there
    with monkeypatch.context() as patch:
        patch.setattr(job, "CHECKPOINT_EVERY", 0.0)
        real = recording.save_checkpoint

        def save_then_stop(directory, checkpoint):
            real(directory, checkpoint)
            raise KeyboardInterrupt

        patch.setattr(recording, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            diagnostics.train_plan(experiment, plan, tmp_path, backend=backend, quiet=True)
    run = tmp_path / "C-1"
    assert json.loads((run / SUMMARY).read_text())["status"] == "interrupted" and (run / CHECKPOINT).is_file()
    resumed = diagnostics.train_plan(experiment, plan, tmp_path, backend=backend, quiet=True)
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["status"] == "complete" and summary["resumed_at_steps"] == [10] and summary["seed"] == 0
    assert json.loads((run / CONFIG).read_text())["diagnostics"]["preset"] == "fig5"
    assert "earlier_processes" in json.loads((run / MANIFEST).read_text())
    assert not (run / CHECKPOINT).exists()
    spec = diagnostics.run_spec(experiment, plan, backend=backend)
    assert Store(tmp_path).state(spec).done
    assert [r["step"] for r in resumed["history"]] == [r["step"] for r in whole["history"]] == [0, 10, 20]
    for a, b in zip(resumed["history"], whole["history"]):
        assert a.keys() == b.keys()
        for key in a.keys() - {"seconds"}:
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
    assert resumed["gradients"].steps == whole["gradients"].steps == [0, 10, 20]
    # a second invocation reads the run back and trains nothing
    monkeypatch.setattr(training, "train_seeds", lambda *a, **k: pytest.fail("trained again"))
    before = (run / SUMMARY).read_bytes()
    assert diagnostics.is_complete(experiment, run)
    again = diagnostics.train_plan(experiment, plan, tmp_path, backend=backend, quiet=True)
    assert (run / SUMMARY).read_bytes() == before and again["history"] == resumed["history"]


def test_runs_recorded_before_seeds_were_data_are_read_as_seed_0(tmp_path):
    """A seed-0 directory without summary.json takes its summary from the preset's numbers.json (old layout)."""
    from gradpath.suite.diagnostics.experiments import is_complete, load_run

    experiment = _tiny()
    plan = experiment.runs[0]
    run = tmp_path / "C-1"
    run.mkdir()
    history = [{"step": 0, "seconds": 0.0, "sigma_max_total": 5.0},
               {"step": 20, "seconds": 1.5, "loss_residual": 0.1, "loss_boundary": 0.2, "rel_l2": 0.3,
                "sigma_max_total": 4.0}]
    pd.DataFrame(history).to_csv(run / "history.csv", index=False)
    save_gradients(run, GradientRecord(("residual", "boundary"), ("W0",), (5,)))
    assert not is_complete(experiment, run)  # params.npz missing: training did not finish
    np.savez(run / "params.npz", W0=np.zeros((1, 5)))
    assert is_complete(experiment, run)
    (tmp_path / "numbers.json").write_text(json.dumps({"seed": 0, "runs": [
        {"label": "C=1", "wall_seconds": 12.5, "compile_seconds": 2.0}, {"label": "C=2", "wall_seconds": 99.0}]}))
    result = load_run(experiment, plan, tmp_path, 0)
    assert (result["seed"], result["steps"], result["error"]) == (0, 20, 0.3)
    assert (result["wall_seconds"], result["compile_seconds"]) == (12.5, 2.0)
    # the summary recovered from numbers.json is kept beside the run, so a later numbers.json cannot lose it
    (tmp_path / "numbers.json").unlink()
    assert load_run(experiment, plan, tmp_path, 0)["wall_seconds"] == 12.5
    assert [row["sigma_max_total"] for row in result["history"]] == [5.0, 4.0]
    with pytest.raises(UsageError, match="C-1-seed-1 holds no finished run"):
        load_run(experiment, plan, tmp_path, 1)


def test_the_seed_band_is_the_median_and_range_over_seeds_at_shared_steps(tmp_path):
    from gradpath.suite.diagnostics.plots import seed_band, sigma_max_figure

    frames = [pd.DataFrame({"step": [0, 10, 20, 30], "sigma_max_total": [1.0, 2.0, 3.0, 4.0]}),
              pd.DataFrame({"step": [0, 10, 20], "sigma_max_total": [3.0, np.nan, 9.0]}),
              pd.DataFrame({"step": [0, 10, 20], "sigma_max_total": [2.0, 5.0, 6.0]})]
    band = seed_band(frames, "sigma_max_total")
    assert band["step"].tolist() == [0, 20]  # only where every seed has a value
    assert band["median"].tolist() == [2.0, 6.0]
    assert band["low"].tolist() == [1.0, 3.0] and band["high"].tolist() == [3.0, 9.0]
    assert band["seeds"].tolist() == [3, 3]
    assert len(seed_band(frames, "sigma_max_boundary")) == 0
    path = sigma_max_figure([("A", frames), ("B", frames[:1])], ("total",), tmp_path / "s.png", paper_range=(1e2, 1e5))
    assert path.stat().st_size > 0


def _result(label, history, *, seed=0, parameters=None, spectra=None, keys=("W0", "W1")):
    """A run's result as train_plan returns it, from a hand-made history (no training)."""
    return {"label": label, "seed": seed, "problem": "p", "parameters": parameters or {}, "method": "M1",
            "steps": history[-1]["step"], "error": 0.5, "metric": "rel_l2", "train_seconds": 1.0,
            "compile_seconds": None, "wall_seconds": None, "history": history, "spectra": spectra or {},
            "gradients": GradientRecord(("residual", "boundary"), tuple(keys), (4,) * len(keys))}


def test_fig3_reports_the_growth_of_both_terms_gradients_from_the_data(tmp_path):
    from gradpath.suite.diagnostics.report import write_diagnostics_report as write_report
    from gradpath.suite.diagnostics.experiments import get_experiment

    experiment = get_experiment("fig3")

    def history(residual, boundary):  # max |grad| per layer W0, W1 at the last checkpoint
        row = {"step": 40000}
        for term, (m0, m1) in (("residual", residual), ("boundary", boundary)):
            row.update({f"grad_max_{term}_W0": m0, f"grad_max_{term}_W1": m1,
                        f"grad_mean_{term}_W0": m0 / 10, f"grad_mean_{term}_W1": m1 / 10})
        return [{"step": 0}, row]

    def run(boundary_growth):
        results = [_result(f"C={c}", history((c ** 3, 1.0), (1.0, 2.0 * g)), parameters={"C": float(c)})
                   for c, g in ((1, 1.0), (2, 1 + (boundary_growth - 1) / 2), (4, boundary_growth))]
        write_report(experiment, results, tmp_path, backend="jax", parameter_set="weights")
        return json.loads((tmp_path / "numbers.json").read_text())

    numbers = run(23.0)
    head = numbers["headline"]
    assert head["max|grad L_r| C=4/C=1"] == pytest.approx(64.0)  # the layer maxima: 64 over 1
    assert head["max|grad L_ub| C=4/C=1"] == pytest.approx(23.0)
    assert head["max|grad L_ub| C=2/C=1"] == pytest.approx(12.0)
    assert head["imbalance C=4"] == pytest.approx((64 + 1) / (1 + 2 * 23.0))
    readme = (tmp_path / "README.md").read_text()
    assert "max|grad L_ub| is 12x (C=2) and 23x (C=4) that of C=1: the boundary gradients grow with C" in readme
    assert "(C^4 ratios: 16, 256)" in readme
    numbers = run(1.5)
    assert "within 2x: no growth with C, as the paper states" in " ".join(numbers["statement"])


def test_loss_movement_tells_an_oscillating_loss_from_a_steadily_falling_one():
    from gradpath.suite.diagnostics.report import loss_movement

    steps = np.arange(0, 4100, 100)
    falling = 10.0 * 0.9 ** np.arange(len(steps))  # falls a decade every 22 logged steps, never rises
    zigzag = falling * np.where(np.arange(len(steps)) % 2, 10.0, 1.0)  # up a decade, down again, every other step
    frame = pd.DataFrame({"step": steps, "loss_boundary": falling, "loss_residual": zigzag})
    smooth, rough = loss_movement(frame, "boundary"), loss_movement(frame, "residual")
    assert smooth["intervals"] == rough["intervals"] == len(steps) - 1
    assert smooth["rising_fraction"] == 0.0 and smooth["kendall_tau"] == pytest.approx(-1.0)
    assert smooth["median_step_decades"] == pytest.approx(-np.log10(0.9))
    assert smooth["net_change_decades"] == pytest.approx(np.log10(np.median(falling[-4:]) / np.median(falling[:4])))
    assert rough["rising_fraction"] == pytest.approx(20 / 40)
    assert rough["median_step_decades"] == pytest.approx(1.0)  # halfway between up 0.95 and down 1.05
    assert rough["kendall_tau"] > -0.9


def test_fig4_reports_fig4b_from_the_logged_losses(tmp_path):
    from gradpath.suite.diagnostics.report import write_diagnostics_report as write_report
    from gradpath.suite.diagnostics.experiments import get_experiment

    experiment = get_experiment("fig4")
    rng = np.random.default_rng(0)
    steps = np.arange(100, 40100, 100)
    trend = np.geomspace(1.0, 1e-3, len(steps))
    residual = trend * 10 ** rng.uniform(-1, 1, len(steps))  # a falling trend under a decade of noise
    boundary = np.geomspace(10.0, 0.1, len(steps))
    history = [{"step": 0}] + [{"step": int(s), "loss_residual": r, "loss_boundary": b}
                               for s, r, b in zip(steps, residual, boundary)]
    spectra = {"residual": np.array([-1.0, 5.0, 2e3, 3e5]), "boundary": np.array([-0.1, 0.5, 40.0, 400.0])}
    files = write_report(experiment, [_result("a2=4", history, spectra=spectra)], tmp_path, backend="jax",
                         parameter_set="weights")
    assert {"fig4-spectra.png", "fig4-losses.png"} <= {f.name for f in files}
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    head = numbers["headline"]
    rises = np.mean(np.diff(residual) > 0)
    assert head["L_r: share of logged intervals in which it rose"] == pytest.approx(rises)
    assert 0.3 < rises < 0.7
    assert head["L_ub: share of logged intervals in which it rose"] == 0.0
    assert head["L_ub: net change, decades (last vs first tenth)"] == pytest.approx(
        np.log10(np.median(boundary[-40:]) / np.median(boundary[:40])))
    assert head["ratio residual/boundary"] == pytest.approx(3e5 / 400)
    assert numbers["per_seed"]["0"]["spectra"]["residual"]["count_above_1e3"] == 2
    statement = " ".join(numbers["statement"])
    assert "L_r oscillates" in statement and "L_ub decreases steadily" in statement


def test_sigma_max_is_set_against_the_paper_axis_and_summarised_over_seeds(tmp_path):
    from gradpath.suite.diagnostics.report import PAPER_SIGMA_AXIS, write_diagnostics_report as write_report
    from gradpath.suite.diagnostics.experiments import get_experiment

    experiment = get_experiment("fig11")

    def history(values):
        return [{"step": 1000 * i, "sigma_max_total": v, "sigma_max_residual": v, "sigma_max_boundary": 1.0}
                for i, v in enumerate(values)]

    results = []
    for seed, (m1, m3) in enumerate([([4e5, 6e5], [1e5, 2e5]), ([5e5, 9e5], [2e5, 3e5]), ([2e5, 8e5], [1e5, 1e5])]):
        results += [_result("M1", history(m1), seed=seed), _result("M3", history(m3), seed=seed)]
    files = write_report(experiment, results, tmp_path, backend="jax", seeds=[0, 1, 2], parameter_set="weights")
    assert "fig11-sigma-max.png" in {f.name for f in files}
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    geometric = [np.sqrt(4 * 3), np.sqrt(2.5 * 3), np.sqrt(2 * 8)]
    spread = numbers["spread"]["sigma_max M1/M3 (geometric mean over checkpoints)"]
    assert spread["per_seed"] == {str(s): pytest.approx(g) for s, g in enumerate(geometric)}
    assert spread["median"] == pytest.approx(np.median(geometric)) and spread["max"] == pytest.approx(4.0)
    assert numbers["spread"]["at the last checkpoint"]["per_seed"]["2"] == pytest.approx(8.0)
    span = numbers["sigma_max_range"]
    assert span["paper_axis"] == list(PAPER_SIGMA_AXIS) == [1e2, 1e5]
    m1 = [4e5, 6e5, 5e5, 9e5, 2e5, 8e5]
    assert span["M1"]["checkpoints"] == 6 and span["M1"]["median"] == pytest.approx(np.median(m1))
    assert span["M1"]["max_over_axis_top"] == pytest.approx(9.0)
    assert span["M1"]["median_over_axis_top"] == pytest.approx(np.median(m1) / 1e5)
    statement = " ".join(numbers["statement"])
    assert "Over 3 seeds" in statement and "from 1e2 to 1e5" in statement
    assert "M1 2e+05 to 9e+05 (median 5.5e+05: median 5.5x and largest 9x the axis top)" in statement
