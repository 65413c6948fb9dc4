"""Campaigns: TOML and presets, errors with a close match, expansion, stable keys, executors."""

from __future__ import annotations

import importlib.util
import json

import pytest

from gradpath.backends.methods import METHODS
from gradpath.problems import problem_names, problem_sources
from gradpath.problems.errors import UsageError
from gradpath.suite.campaigns.definition import expand, load_campaign, parse_campaign
from gradpath.suite.cli.commands import main
from gradpath.suite.campaigns import schedule
from gradpath.suite.campaigns.schedule import run_campaign
from gradpath.suite.campaigns.presets import PRESETS
from gradpath.suite.runs.record import SUMMARY, config_hash
from gradpath.suite.runs.store import Store

TINY = {"steps": 20, "width": 8, "depth": 2, "log_every": 10}
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")


def _toml(tmp_path, text: str, name: str = "c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _campaign(data):
    return expand(parse_campaign(data, "test"))


def test_toml_campaign_expands_to_the_product(tmp_path):
    source = _toml(tmp_path, """
name = "demo"
[grid]
problem = ["poisson1d", "helmholtz"]
method = ["M1", "M2", "M3"]
seed = [0, 1]
architecture = [[8, 1], [8, 2]]
[settings]
steps = 20
lr = 1                      # an integer where a float goes: the same run as lr = 1.0
[parameters.helmholtz]
a2 = 1
""")
    campaign = load_campaign(source)
    specs = expand(campaign)
    assert campaign.name == "demo" and len(specs) == 2 * 3 * 2 * 2
    assert len({s.key for s in specs}) == len(specs)
    helmholtz = [s for s in specs if s.problem == "helmholtz"]
    assert {s.config["parameters"]["a2"] for s in helmholtz} == {1.0}
    assert {(s.config["settings"]["width"], s.config["settings"]["depth"]) for s in specs} == {(8, 1), (8, 2)}
    assert all(s.config["settings"]["lr"] == 1.0 and isinstance(s.config["settings"]["lr"], float) for s in specs)
    assert [s.key for s in specs] == [s.key for s in expand(load_campaign(source))]  # stable


def test_a_parameter_axis_applies_only_to_problems_that_have_it():
    specs = _campaign({"grid": {"problem": ["helmholtz", "poisson1d"], "a2": [1, 4], "seed": [0, 1]}})
    assert len(specs) == 2 * 2 + 2  # helmholtz x a2 x seed, poisson1d x seed
    assert sorted(s.parameters["a2"] for s in specs if s.problem == "helmholtz") == [1.0, 1.0, 4.0, 4.0]


def test_grids_are_a_union_without_duplicates():
    grid = {"problem": ["poisson1d"], "method": ["M1", "M2"], "seed": [0]}
    specs = _campaign({"grid": [grid, {**grid, "method": ["M2", "M3"]}]})
    assert [s.config["settings"]["method"] for s in specs] == ["M1", "M2", "M3"]


def test_keys_follow_the_resolved_config_not_how_it_was_written():
    a = _campaign({"grid": {"problem": ["helmholtz"], "seed": [3]}, "settings": {"steps": 20}})
    b = _campaign({"grid": {"problem": ["helmholtz"], "steps": [20], "seed": [3]},
                   "parameters": {"helmholtz": {"a2": 4.0}}})  # the default, written out
    c = _campaign({"grid": {"problem": ["helmholtz"], "seed": [3], "width": [50]}, "settings": {"steps": 20}})
    assert a[0].key == b[0].key == c[0].key == config_hash(a[0].config)  # width 50 is the problem's own
    assert a[0].name == f"helmholtz-M1-jax-s3-{a[0].key}"
    d = _campaign({"grid": {"problem": ["helmholtz"], "seed": [3]}, "settings": {"steps": 21}})
    assert d[0].key != a[0].key


def test_grid_options_apply_to_the_methods_that_use_them():
    """Annealing options reach M2/M4 only and the gate form M3/M4 only: the other runs are the same
    runs (the same keys) as without them, never a second copy."""
    plain = {s.settings["method"]: s.key for s in _campaign({"grid": {"problem": ["helmholtz"],
                                                                      "method": ["M1", "M2", "M3", "M4"]}})}
    crossed = _campaign({"grid": {"problem": ["helmholtz"], "method": ["M1", "M2", "M3", "M4"],
                                  "weighting": ["code-global"], "gate": ["paper"]},
                         "settings": {"anneal_every": 5, "anneal_alpha": 0.5}})
    keys = {s.settings["method"]: s.key for s in crossed}
    assert keys["M1"] == plain["M1"]  # none of them applies to M1
    assert len({keys["M2"], keys["M3"], keys["M4"], plain["M2"], plain["M3"], plain["M4"]}) == 6
    by_method = {s.settings["method"]: s.config["settings"] for s in crossed}
    assert by_method["M2"]["weighting"] == "code-global" and by_method["M2"]["gate"] == "code"
    assert by_method["M3"]["gate"] == "paper" and by_method["M3"]["anneal_every"] == 10
    assert (by_method["M4"]["gate"], by_method["M4"]["anneal_alpha"]) == ("paper", 0.5)


@needs_jax
def test_a_campaign_run_and_gradpath_run_share_the_key(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["run", "poisson1d", "--iterations", "20", "--log-every", "10", "--width", "8", "--depth", "2",
                 "--seed", "1", "--out", str(store), "--quiet"]) == 0
    source = _toml(tmp_path, """
[grid]
problem = ["poisson1d"]
seed = [1, 2]
[settings]
steps = 20
log_every = 10
width = 8
depth = 2
""")
    capsys.readouterr()
    assert main(["campaign", source, "--store", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 1 done, 1 to run" in out
    assert out.splitlines()[0].startswith("done ")


@pytest.mark.parametrize("text, message", [
    ("[grid\nproblem = 1", "is not valid TOML"),
    ("[gird]\nproblem = ['helmholtz']", "unknown campaign key 'gird'; choose one of: description, grid, name, "
                                        "parameters, settings (did you mean 'grid'?)"),
    ("[grid]\nproblem = ['helmholtz']\nmethd = ['M1']", "unknown [grid] key 'methd'; choose one of: "),
    ("[grid]\nproblem = ['helmholtz']\nmethd = ['M1']", "(did you mean 'method'?)"),
    ("[grid]\nproblem = ['helmholtz']\n[settings]\nstep = 5", "unknown setting 'step'; choose one of: "),
    ("[grid]\nproblem = ['helmholtz']\n[settings]\nstep = 5", "(did you mean 'steps'?)"),
    ("[grid]\nproblem = ['helmholtz']\n[parameters.helmholtz]\na22 = 5",
     "unknown parameter of helmholtz 'a22'; choose one of: a1, a2, k (did you mean 'a2'?)"),
    ("[grid]\nproblem = ['helmhotz']", "unknown problem 'helmhotz'; choose one of: "),
    ("[grid]\nproblem = ['helmholtz']\nbackend = ['jx']", "(did you mean 'jax'?)"),
    ("[grid]\nproblem = ['helmholtz']\nseed = []", "the campaign has no runs: [grid] axis 'seed' is empty"),
    ("[grid]\nmethod = ['M1']", "[grid] has no 'problem' axis"),
    ("name = 'x'", "no [grid] table"),
    ("[grid]\nproblem = ['helmholtz']\nseed = 3", "[grid] seed must be a list of values, e.g. seed = [3]"),
    ("[grid]\nproblem = ['helmholtz']\narchitecture = [50, 5]", "architecture must be a list of [width, depth] pairs"),
    ("[grid]\nproblem = ['helmholtz']\narchitecture = [[50, 5]]\n[settings]\nwidth = 3", "architecture and width"),
    ("[grid]\nproblem = ['helmholtz']\nsteps = [5]\n[settings]\nsteps = 5", "'steps' is both a [grid] axis"),
    ("[grid]\nproblem = ['helmholtz']\nwidth = [0]", "--width must be a positive integer, got 0"),
    ("[grid]\nproblem = ['helmholtz']\nmethod = ['M5']", "unknown method 'M5'; choose one of: M1, M2, M3, M4"),
    ("[grid]\nproblem = ['helmholtz']\n[settings]\nsteps = 'many'", "setting 'steps' must be int, got 'many'"),
    ("[grid]\nproblem = ['helmholtz']\n[settings]\nlr = true", "setting 'lr' must be float"),
    ("[[grid]]\nproblem = ['helmholtz']\n[[grid]]\nproblem = ['poisson1d']\nmethd = ['M1']",
     "unknown [[grid]] number 2 key 'methd'"),
])
def test_bad_campaign_files_are_one_line_usage_errors(tmp_path, capsys, text, message):
    source = _toml(tmp_path, text)
    with pytest.raises(UsageError) as info:
        expand(load_campaign(source))
    assert message in str(info.value) and source in str(info.value)
    assert main(["campaign", source, "--store", str(tmp_path / "store"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradpath: error: ") and err.count("\n") == 1 and message in err


def test_unknown_preset_and_missing_file(tmp_path, capsys):
    assert main(["campaign", "smok", "--dry-run", "--store", str(tmp_path)]) == 2
    assert "unknown preset 'smok'; choose one of: " in capsys.readouterr().err
    with pytest.raises(UsageError, match=r"\(did you mean 'smoke'\?\); or give a campaign .toml file"):
        load_campaign("smok")
    with pytest.raises(UsageError, match="campaign file 'nope.toml' does not exist"):
        load_campaign("nope.toml")


def test_an_unwritable_store_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="is not writable"):
        Store(blocker / "store")
    assert main(["campaign", "table3", "--store", str(blocker / "store"), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose another with --store DIR" in err


def test_presets_expand_to_the_papers_grids():
    counts = {name: len(expand(load_campaign(name))) for name in PRESETS}
    assert counts["table2"] == 3 * 3 * 4 * 10
    assert counts["table3"] == 4 * 10
    cavity = "cavity" in problem_sources()
    assert ("cavity" in counts) == cavity
    # JAX: everything with 10 seeds; torch: Table 3, the cavity and the 50 x 3 row with 10, the rest of Table 2 with 3
    torch_runs = counts["table3"] + (counts["cavity"] if cavity else 0) + 4 * 10 + 8 * 4 * 3
    assert counts["paper"] == counts["table2"] + counts["table3"] + (counts["cavity"] if cavity else 0) + torch_runs
    paper = expand(load_campaign("paper"))
    first = paper[:80]  # the headline row comes first, in JAX then in PyTorch
    assert [(s.problem, s.backend, s.config["settings"]["width"], s.config["settings"]["depth"]) for s in first] \
        == [("helmholtz", "jax", 50, 3)] * 40 + [("helmholtz", "torch", 50, 3)] * 40
    assert {(s.problem, s.backend) for s in paper[80:120]} == {("klein-gordon", "jax")}
    if cavity:  # then the cavity's headline factor: M1 and M4 of the psi-p form in JAX
        assert [(s.problem, s.backend, s.parameters["form"], s.settings["method"]) for s in paper[120:140:10]] \
            == [("cavity", "jax", "psi-p", "M1"), ("cavity", "jax", "psi-p", "M4")]
    kg_torch = 160 if cavity else 120  # then Klein-Gordon in PyTorch, then the rest of Table 2 in JAX
    assert {(s.problem, s.backend) for s in paper[kg_torch:kg_torch + 40]} == {("klein-gordon", "torch")}
    assert {(s.problem, s.backend) for s in paper[kg_torch + 40:kg_torch + 40 + 320]} == {("helmholtz", "jax")}
    if cavity:
        assert counts["cavity"] == 2 * 4 * 10
        # then the cavity's cells not yet run: u-v-p in JAX (cells of the paper, cheap), psi-p and u-v-p in torch
        rest = paper[kg_torch + 40 + 320:]  # Table 2 in JAX: 360 runs, less the 40 of the headline row
        assert [(s.backend, s.parameters["form"]) for s in rest[:120:40]] \
            == [("jax", "u-v-p"), ("torch", "psi-p"), ("torch", "u-v-p")]
        assert {(s.problem, s.backend) for s in rest[120:]} == {("helmholtz", "torch")}
    problems = problem_names()
    backends = sum(importlib.util.find_spec(m) is not None for m in ("jax", "torch"))
    per_backend = len(METHODS) * (len(problems) + (1 if cavity else 0))  # cavity in both forms
    assert counts["smoke"] == backends * per_backend
    smoke = expand(load_campaign("smoke"))
    assert all(s.settings["compile"] is False for s in smoke if s.backend == "torch")
    assert {s.config["settings"]["steps"] for s in smoke} == {200}
    table2 = expand(load_campaign("table2"))
    assert {(s.config["settings"]["width"], s.config["settings"]["depth"]) for s in table2} == \
        {(w, d) for w in (30, 50, 100) for d in (3, 5, 7)}
    assert {s.config["settings"]["steps"] for s in table2} == {40001}


def test_dry_run_lists_every_run(tmp_path, capsys):
    assert main(["campaign", "table3", "--dry-run", "--store", str(tmp_path / "s")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 41 and all(line.startswith("to run") for line in lines[:-1])
    assert lines[-1].startswith("campaign table3 (preset table3): 40 runs, 0 done, 40 to run")
    assert not (tmp_path / "s").exists()  # a dry run creates nothing


def test_spec_round_trips_through_json():
    spec = _campaign({"grid": {"problem": ["helmholtz"]}, "settings": TINY})[0]
    assert type(spec).from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["key"] == spec.key


@needs_jax
def test_a_failing_run_is_recorded_and_the_campaign_goes_on(tmp_path, capsys):
    source = _toml(tmp_path, """
[grid]
problem = ["poisson1d"]
device = ["cpu", "cuda"]
[settings]
steps = 20
log_every = 10
width = 8
depth = 1
""")
    import jax
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU, so device cuda does not fail")
    store = tmp_path / "store"
    assert main(["campaign", source, "--store", str(store), "--jobs", "2", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "1 complete, 1 failed" in out
    summaries = {p.parent.name: json.loads(p.read_text()) for p in store.glob(f"*/{SUMMARY}")}
    failed = [s for s in summaries.values() if s["status"] == "failed"]
    assert len(summaries) == 2 and len(failed) == 1
    assert "cuda" in failed[0]["failure"] and "Traceback" in failed[0]["traceback"]
    # the failed run is redone next time (and fails again); the complete one is skipped
    assert main(["campaign", source, "--store", str(store), "--jobs", "1", "--quiet"]) == 1
    assert "2 runs, 1 already done; this time: 1 failed" in capsys.readouterr().out


@needs_jax
def test_dask_executor_on_a_loopback_cluster(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    specs = _campaign({"grid": {"problem": ["poisson1d"], "seed": [0, 1]},
                       "settings": {**TINY, "depth": 1}})
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        from gradpath.suite.campaigns.executors import make_executor
        executor = make_executor("dask", scheduler=cluster.scheduler_address)
        try:
            assert executor.slots == 2
            result = run_campaign(specs, Store(tmp_path), executor, quiet=True)
        finally:
            executor.close()
    assert result.counts == {"complete": 2}
    assert all(Store(tmp_path).state(s).done for s in specs)


def test_dask_executor_needs_a_scheduler(capsys, tmp_path):
    assert main(["campaign", "table3", "--executor", "dask", "--store", str(tmp_path)]) == 2
    assert "--executor dask needs --scheduler tcp://HOST:PORT" in capsys.readouterr().err


def test_an_interrupted_job_trains_none_of_its_other_groups(monkeypatch, tmp_path):
    """Ctrl-C in a job whose runs stopped at different checkpoint steps (two groups) stops the job."""
    import types

    from gradpath.suite.runs import job

    specs = _campaign({"grid": {"problem": ["poisson1d"], "seed": [0, 1]}, "settings": {**TINY, "depth": 1}})
    store = Store(tmp_path)
    checkpoints = {store.path(specs[0]): types.SimpleNamespace(step=10)}  # seed 1 has none: a second group
    monkeypatch.setattr(job, "load_checkpoint", lambda path: checkpoints.get(path))
    trained = []

    def interrupted(some, store, argv, t0, resume=None):
        trained.append([s.settings["seed"] for s in some])
        return [job.outcome(s, "interrupted", t0, "interrupted") for s in some]

    monkeypatch.setattr(job, "_train", interrupted)
    outcomes = job.run_group(specs, str(tmp_path), [])
    assert trained == [[0]]  # the second group never started
    assert [o["status"] for o in outcomes] == ["interrupted", "interrupted"]
    assert outcomes[1]["message"] == "interrupted before it started"


@pytest.mark.parametrize("options, message", [
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler does nothing with --executor local"),
    (["--executor", "dask-local", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler does nothing with --executor dask-local"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1", "--jobs", "2"], "--jobs does nothing with --executor dask"),
    (["--workers", "2"], "--workers does nothing with --executor local"),
])
def test_an_option_the_executor_ignores_is_a_usage_error(options, message, capsys, tmp_path):
    assert main(["campaign", "table3", "--store", str(tmp_path), *options]) == 2
    err = capsys.readouterr().err
    assert message in err and "options by executor: --executor local: --jobs;" in err


@needs_jax
def test_a_job_skips_runs_that_are_done_or_held_and_a_dead_worker_fails_only_unfinished_ones(monkeypatch, tmp_path):
    import concurrent.futures

    from gradpath.suite.runs import job
    from gradpath.suite.runs.record import RunRecord

    done, held, unfinished = _campaign({"grid": {"problem": ["poisson1d"], "seed": [0, 1, 2]},
                                        "settings": {**TINY, "depth": 1}})
    store = Store(tmp_path)
    assert job.run_group([done], str(tmp_path), [])[0]["status"] == "complete"
    record_of_done = (store.path(done) / SUMMARY).read_bytes()
    lock = Store.lock
    monkeypatch.setattr(Store, "lock", lambda self, run, timeout=30.0: lock(self, run, timeout=0.2))
    with lock(store, held):  # another process trains it
        outcomes = job.run_group([done, held], str(tmp_path), [])
    assert [(o["status"], o["message"]) for o in outcomes] == [
        ("skipped", "already done"), ("skipped", "another process holds its lock")]
    assert not store.path(held).exists()

    class DyingWorkers:  # every job's process dies (killed, out of memory)
        slots = 2

        def submit(self, specs, root, argv):
            future = concurrent.futures.Future()
            future.set_exception(RuntimeError("killed"))
            return future

        def wait(self, futures):
            return set(futures)

        def close(self, cancel=False):
            pass

    RunRecord.create(tmp_path, unfinished.config, {})  # it had started: its record says running
    result = run_campaign([done, held, unfinished], store, DyingWorkers(), quiet=True, lanes=1)
    assert result.already == 1 and result.counts == {"failed": 2}
    summary = json.loads((store.path(unfinished) / SUMMARY).read_text())
    assert summary == {"status": "failed", "failure": "worker process died: RuntimeError: killed"}
    assert not store.path(held).exists()  # no record is made up for a run that never started
    # a worker that dies after its run finished leaves the finished record, and its status, alone
    outcome = schedule._worker_died(store, done, RuntimeError("killed"), 0.0)
    assert outcome["status"] == "complete" and "then its worker process died" in outcome["message"]
    assert (store.path(done) / SUMMARY).read_bytes() == record_of_done
