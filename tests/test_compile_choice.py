"""``--compile auto|on|off``, the routes a torch step can take, and the caches that outlive a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradpath.backends.settings import TrainSettings
from gradpath.backends.training import train
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError
from gradpath.suite.campaigns.definition import config_hash
from gradpath.suite.cli.commands import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty gradpath cache folder, used by everything in the test."""
    monkeypatch.setenv("GRADPATH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_compile_takes_three_choices_and_the_booleans_it_took_before():
    assert TrainSettings().compile == "auto"
    assert TrainSettings(compile=True).compile == "on" and TrainSettings(compile=False).compile == "off"
    with pytest.raises(UsageError, match="unknown compile choice 'yes'; choose one of: auto, on, off"):
        TrainSettings(compile="yes")
    problem = get_problem("helmholtz")
    resolved = {c: TrainSettings(compile=c).resolved(problem) for c in ("auto", "on", "off")}
    # the run key says whether compiling was allowed, as before auto existed: stored runs keep their keys
    assert resolved["auto"]["compile"] is True and resolved["off"]["compile"] is False
    assert resolved["auto"] == resolved["on"] and config_hash(resolved["auto"]) != config_hash(resolved["off"])


torch_choice = pytest.importorskip("gradpath.backends.torch.compile_choice") if __import__("importlib").util.find_spec(
    "torch") else None
needs_torch = pytest.mark.skipif(torch_choice is None, reason="torch is not installed")


@needs_torch
def test_with_nothing_measured_the_route_follows_the_run_length(cache):
    problem = get_problem("helmholtz")

    def route(steps, compile_="auto"):
        return torch_choice.plan(problem, TrainSettings(method="M4", steps=steps, compile=compile_), "cpu", None)

    assert route(50).route == "eager"  # too short to repay tracing
    assert route(2_000).route == "traced"  # too short to repay inductor from empty caches
    assert route(1_000_000).route == "compiled"
    assert route(1_000_000, "off").route == "eager"  # off is the eager step, as before auto existed
    assert route(50, "on").route == "compiled" and route(50, "on").reason == "--compile on"
    assert "estimated; cold caches" in route(2_000).reason


@needs_torch
def test_measurements_in_the_ledger_decide_and_compiled_packages_make_the_caches_warm(cache):
    problem = get_problem("helmholtz")
    settings = TrainSettings(method="M1", steps=1_000)
    key = torch_choice.configuration_key(problem, settings, "cpu", None)
    torch_choice.record(key, eager_ms=10.0, traced_ms=5.0, compiled_ms=1.0, trace_s=1.0, cold_compile_s=100.0)
    cold = torch_choice.plan(problem, settings, "cpu", None)
    # eager 10 s, traced 1 + 5 = 6 s, compiled from empty caches 100 + 1 = 101 s
    assert (cold.route, cold.cache) == ("traced", "cold") and "as measured before" in cold.reason
    torch_choice.record(key, warm_compile_s=2.0)
    assert torch_choice.plan(problem, settings, "cpu", None).route == "traced"  # no package: still cold
    package = cache / "compile" / "torch" / "packages" / f"{key}-step-0123.pt2"
    package.parent.mkdir(parents=True)
    package.write_bytes(b"")
    warm = torch_choice.plan(problem, settings, "cpu", None)
    assert (warm.route, warm.cache) == ("compiled", "warm")  # 2 + 1 = 3 s
    assert "compiled 3.0 s, traced 6.0 s, eager 10.0 s" in warm.reason


@needs_torch
def test_the_ledger_key_ignores_seed_and_length_but_not_what_the_graph_holds():
    problem = get_problem("helmholtz")

    def key(**kw):
        return torch_choice.configuration_key(problem, TrainSettings(**kw), "cpu", None)

    assert key(seed=0, steps=10) == key(seed=3, steps=40_001, log_every=7, compile="off")
    assert key(method="M1") == key(method="M1", loss_weights={"boundary": 100.0})  # weights are state, not graph
    assert len({key(), key(width=20), key(method="M2"), key(lr=2e-3), key(dtype="float64")}) == 5
    assert key() != torch_choice.configuration_key(get_problem("helmholtz", a2=1), TrainSettings(), "cpu", None)
    assert key() != torch_choice.configuration_key(problem, TrainSettings(), "cpu", 3)


@needs_torch
def test_the_traced_route_computes_the_eager_step_to_rounding(cache):
    import dataclasses

    import gradpath.backends.torch.trainer as torch_trainer
    from gradpath.backends.data import draw_batches, seed_start

    problem = get_problem("poisson1d")
    settings = TrainSettings(method="M2", width=8, depth=2, batch_size=16, dtype="float64", steps=12, log_every=12,
                             anneal_every=5, compile="off")
    outs = {}
    for route in ("eager", "traced"):
        trainer = torch_trainer.TorchBackend().trainer(problem, settings, "cpu")
        trainer.plan = dataclasses.replace(trainer.plan, route=route)
        start = seed_start(problem, settings)
        state = trainer.init(start.params, start.mu, start.sigma)
        batches = draw_batches(problem, start.batches, 12, settings.batch_size, settings.dtype)
        state, out = trainer.train(state, batches)
        outs[route] = (trainer.export(state), out)
        assert bool(trainer._compiled) == (route == "traced")
    (eager_params, eager_out), (traced_params, traced_out) = outs["eager"], outs["traced"]
    # the same operations: float64 sums may differ in the last bit (BLAS sees other memory layouts)
    np.testing.assert_allclose(traced_out.losses, eager_out.losses, rtol=1e-13)
    np.testing.assert_allclose(traced_out.weights, eager_out.weights, rtol=1e-13)
    for k in eager_params:
        np.testing.assert_allclose(traced_params[k], eager_params[k], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_run_records_its_route_and_why_in_its_manifest(backend, cache, tmp_path, capsys):
    pytest.importorskip(backend)
    assert main(["run", "poisson1d", "--backend", backend, "--iterations", "20", "--log-every", "10", "--width", "8",
                 "--depth", "2", "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    compilation = json.loads(next((tmp_path / "runs").glob("*/manifest.json")).read_text())["compilation"]
    if backend == "jax":
        assert compilation["route"] == "compiled" and compilation["reason"] == "jax always compiles (jax.jit)"
    else:
        assert compilation["route"] == "eager" and compilation["reason"].startswith("auto: eager finishes 20 steps")
        ledger = list((cache / "compile" / "torch" / "ledger").glob("*.json"))
        assert [p.stem for p in ledger] == [compilation["ledger_key"]]
        assert json.loads(ledger[0].read_text())["eager_ms"] > 0  # what the next run's choice reads


@needs_torch
def test_an_auto_run_goes_on_as_the_process_before_its_checkpoint_ran(cache):
    problem = get_problem("poisson1d")
    settings = TrainSettings(method="M1", width=6, depth=1, batch_size=8, dtype="float64", steps=20, log_every=10)
    kept = []
    first = train(problem, settings, "torch", on_checkpoint=kept.append, checkpoint_every=0)
    assert first.compilation["route"] == "eager" and kept[0].compile_route == "eager"
    checkpoint = kept[0]
    checkpoint.compile_route = "traced"  # as if the first process had measured a faster traced step
    resumed = train(problem, settings, "torch", resume=checkpoint)
    assert resumed.compilation["route"] == "traced"
    assert resumed.compilation["reason"] == "traced, as the process before the checkpoint ran"
    again = train(problem, settings, "torch", resume=kept[0].__class__(**{**vars(kept[0]), "compile_route": "eager"}))
    np.testing.assert_array_equal(again.params["W0"], first.params["W0"])  # the same route: exactly the same run


def test_gradpath_cache_shows_and_clears_each_part(cache, capsys):
    for part in ("compile/jax/a", "compile/torch/ledger/b.json"):
        (cache / part).parent.mkdir(parents=True, exist_ok=True)
        (cache / part).write_bytes(b"x" * 1024)
    (cache / "cavity_re100_n8_0.npz").write_bytes(b"y")
    assert main(["cache"]) == 0
    shown = capsys.readouterr().out
    assert f"gradpath cache: {cache}" in shown and "torch        0.0 MiB in 1 files" in shown
    assert main(["cache", "clear", "--only", "torch"]) == 0
    assert not (cache / "compile" / "torch").exists() and (cache / "compile" / "jax" / "a").exists()
    assert (cache / "cavity_re100_n8_0.npz").exists()
    assert main(["cache", "clear"]) == 0
    assert not (cache / "compile" / "jax").exists() and not (cache / "cavity_re100_n8_0.npz").exists()
    assert main(["cache", "clear", "--only", "jx"]) == 2
    assert "unknown cache part 'jx'; choose one of: cavity, jax, torch (did you mean 'jax'?)" in capsys.readouterr().err
    assert main(["cache", "--only", "jax"]) == 2  # --only without clear would do nothing: said, not ignored
    assert "--only goes with clear" in capsys.readouterr().err


@pytest.mark.parametrize("opt_out", [False, True])
def test_jax_keeps_compiled_programs_in_gradpaths_cache_unless_told_not_to(tmp_path, opt_out):
    pytest.importorskip("jax")
    code = ("from backends import get_backend; get_backend('jax'); import jax, jax.numpy as jnp; "
            "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready(); "
            "print(jax.config.jax_compilation_cache_dir)")
    env = {"GRADPATH_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    if opt_out:
        env["GRADPATH_COMPILE_CACHE"] = "0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    folder = tmp_path / "compile" / "jax"
    if opt_out:
        assert out.stdout.strip() == "None" and not folder.exists()
    else:
        assert out.stdout.strip() == str(folder) and any(folder.iterdir())


@needs_torch
def test_compiled_seeds_trained_together_match_their_eager_runs():
    # the settings of tests/test_checkpoint.py's compiled resume, so that the compiled packages are shared
    from gradpath.backends import conformance as kit
    from gradpath.backends.training import train_seeds

    problem = get_problem("poisson1d")
    runs = {compile_: train_seeds(problem, [kit.small_settings("M2", 20, log_every=6, seed=s, dtype="float32",
                                                               compile=compile_) for s in (0, 1)], "torch")
            for compile_ in ("on", "off")}
    assert [r.compilation["route"] for r in runs["on"]] == ["compiled", "compiled"]
    for compiled, eager in zip(runs["on"], runs["off"]):  # every seed reads its own batches, in every chunk
        for a, b in zip(compiled.history, eager.history):
            np.testing.assert_allclose(a["loss_residual"], b["loss_residual"], rtol=1e-4)
        np.testing.assert_allclose(compiled.params["W0"], eager.params["W0"], rtol=1e-4, atol=1e-6)


@needs_torch
def test_turning_the_caches_off_keeps_no_compiled_packages(monkeypatch):
    from gradpath.backends.torch import packages

    assert packages.available()
    monkeypatch.setenv("GRADPATH_COMPILE_CACHE", "0")
    assert not packages.available()  # torch.compile in every run, nothing kept by gradpath


@needs_torch
def test_without_packages_the_compiled_route_is_torch_compile_and_matches_eager(monkeypatch):
    monkeypatch.setenv("GRADPATH_COMPILE_CACHE", "0")
    problem = get_problem("poisson1d")
    common = dict(method="M1", width=6, depth=1, batch_size=8, dtype="float64", steps=20, log_every=10)
    compiled = train(problem, TrainSettings(**common, compile="on"), "torch")
    eager = train(problem, TrainSettings(**common, compile="off"), "torch")
    assert compiled.compilation["route"] == "compiled"
    np.testing.assert_allclose(compiled.params["W0"], eager.params["W0"], rtol=1e-10)
    np.testing.assert_allclose([r["loss_residual"] for r in compiled.history],
                               [r["loss_residual"] for r in eager.history], rtol=1e-10)


@needs_torch
def test_a_package_belongs_to_one_configuration_and_one_input_layout(cache):
    import torch

    from gradpath.backends.torch import packages

    problem = get_problem("helmholtz")
    base = torch_choice.configuration_key(problem, TrainSettings(), "cpu", None)
    args = ({"w": torch.zeros(3, 2)}, [torch.zeros(4)])
    path = packages.package_path(base, ("step", 1), args)
    assert path.parent == cache / "compile" / "torch" / "packages" and path.name.startswith(f"{base}-step-")
    others = {packages.package_path(base, ("anneal", 1), args),  # another graph
              packages.package_path(base, ("step", 1), ({"w": torch.zeros(3, 3)}, [torch.zeros(4)])),  # shape
              packages.package_path(base, ("step", 1), ({"w": torch.zeros(3, 2, dtype=torch.float64)},
                                                        [torch.zeros(4)])),  # dtype
              packages.package_path(torch_choice.configuration_key(get_problem("helmholtz", a2=1), TrainSettings(),
                                                                    "cpu", None), ("step", 1), args),  # parameters
              packages.package_path(torch_choice.configuration_key(problem, TrainSettings(), "cpu", 2), ("step", 1),
                                    args)}  # lanes
    assert path not in others and len(others) == 5
    assert not packages.holds(base)  # nothing built yet in this cache: a plan for it is cold


@needs_torch
def test_the_key_names_the_hardware_and_a_plugin_problems_own_code():
    key = torch_choice.configuration_key
    described = torch_choice._hardware("cpu")
    assert described["isa"] and described["cpu"] and described["machine"]
    plugin = get_problem("poisson2d")  # tests/plugin_example: its package's source is part of the key
    assert torch_choice._package_digest(type(plugin)) is not None
    assert torch_choice._package_digest(type(get_problem("helmholtz"))) is None  # gradpath's source covers it
    assert key(plugin, TrainSettings(), "cpu", None) != key(plugin, TrainSettings(), "cuda", None)


@needs_torch
def test_constant_loss_weights_share_one_graph_and_keep_their_own_numbers(cache):
    """The loss weights are state, not part of the graph (compile_choice.NOT_IN_GRAPH, so runs with other
    constant weights share one ledger entry and one saved package): the graph traced for one run's
    weights, handed to a run with other weights, trains that run exactly as its eager step does."""
    import dataclasses

    import gradpath.backends.torch.trainer as torch_trainer
    from gradpath.backends.data import draw_batches, seed_start

    problem = get_problem("poisson1d")
    base = dict(method="M1", width=8, depth=2, batch_size=16, dtype="float64", steps=6, log_every=6, compile="off")
    graphs, outs = {}, {}
    for name, weights, route in (("first", {"boundary": 10.0}, "traced"), ("eager", {"boundary": 100.0}, "eager"),
                                 ("reused", {"boundary": 100.0}, "traced")):
        settings = TrainSettings(**base, loss_weights=weights)
        trainer = torch_trainer.TorchBackend().trainer(problem, settings, "cpu")
        trainer.plan = dataclasses.replace(trainer.plan, route=route)
        if name == "reused":
            assert trainer.plan.key == first_key
            trainer._compiled.update(graphs)  # the first run's graphs, not traced again
        start = seed_start(problem, settings)
        state = trainer.init(start.params, start.mu, start.sigma)
        state, out = trainer.train(state, draw_batches(problem, start.batches, 6, 16, "float64"))
        outs[name] = (trainer.export(state), out)
        if name == "first":
            graphs, first_key = dict(trainer._compiled), trainer.plan.key
            assert graphs
    np.testing.assert_allclose(outs["reused"][1].losses, outs["eager"][1].losses, rtol=1e-13)
    for k, v in outs["eager"][0].items():
        np.testing.assert_allclose(outs["reused"][0][k], v, rtol=1e-12, atol=1e-15)
    assert not np.allclose(outs["first"][1].losses, outs["eager"][1].losses)  # the weights did change the run
