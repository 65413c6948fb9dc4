"""Backend contract v2 (gradpath.backends.protocol) and the kit that checks it (gradpath.backends.conformance).

Plugin backends are registered here the way a package registers one, through an entry point of
the ``gradpath.backends`` group (patched into the registry's ``entry_points``). Each wraps the jax
backend, so the kit has real trainers to check.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import warnings

import numpy as np
import pytest

import gradpath.backends
import gradpath.problems
from gradpath.backends import conformance as kit
from gradpath.backends import get_backend, require_method, supported_methods
from gradpath.backends.data import draw_batches, seed_start
from gradpath.backends.diagnostics import hessian_operator
from gradpath.backends.losses import derivatives, term_losses
from gradpath.backends.settings import TrainSettings
from gradpath.backends.step import Step
from gradpath.backends.training import train
from gradpath.problems import get_problem
from gradpath.problems.errors import UsageError

jax_only = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")


class _Trainer:
    """A jax trainer without the members named in ``missing``."""

    def __init__(self, inner, missing) -> None:
        self._inner, self._missing = inner, missing

    def __getattr__(self, name):
        if name in self._missing:
            raise AttributeError(name)
        return getattr(self._inner, name)


class _Plugin:
    """A plugin backend: the jax backend under another name, with chosen declarations."""

    supports_lanes = False

    def __init__(self, name, missing=(), **declared) -> None:
        self.name, self.missing = name, missing
        for key, value in declared.items():
            setattr(self, key, value)

    def resolve_device(self, device):
        return "cpu"

    def device_name(self, device):
        return "cpu"

    def versions(self):
        return {}

    def trainer(self, problem, settings, device):
        return _Trainer(get_backend("jax").trainer(problem, settings, device), self.missing)


class _EntryPoint(importlib.metadata.EntryPoint):
    def load(self):
        return _FACTORIES[self.name]


class _BrokenEntryPoint(importlib.metadata.EntryPoint):
    def load(self):
        raise ImportError("No module named 'gradpath_broken'")


_FACTORIES = {}


@pytest.fixture
def plugins(monkeypatch):
    """Register plugin backends by name: ``plugins(nosnap=lambda: _Plugin(...))``; a problem plugin 'broken' too."""
    real = importlib.metadata.entry_points

    def entry_points(*, group, **kwargs):
        eps = list(real(group=group, **kwargs))
        if group == "gradpath.backends":
            eps += [_EntryPoint(name, f"tests:{name}", group) for name in _FACTORIES]
        if group == "gradpath.problems":
            eps.append(_BrokenEntryPoint("broken", "gradpath_broken:Thing", group))
        return eps

    monkeypatch.setattr(gradpath.backends, "entry_points", entry_points)
    monkeypatch.setattr(gradpath.problems, "entry_points", entry_points)
    gradpath.problems.problem_sources.cache_clear()
    gradpath.backends.get_backend.cache_clear()
    yield _FACTORIES.update
    _FACTORIES.clear()
    gradpath.problems.problem_sources.cache_clear()
    gradpath.backends.get_backend.cache_clear()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_builtin_backends_fulfil_the_contract(backend):
    pytest.importorskip(backend)
    kit.check_contract(backend, kit.small_problem("poisson1d"))
    impl = get_backend(backend)
    assert impl.supports_lanes is True and supported_methods(backend) == kit.METHOD_NAMES
    assert list(inspect.signature(impl.trainer(get_problem("poisson1d"), TrainSettings(), "cpu").train).parameters) \
        == ["state", "batches"]  # no first_step: the count is in the state


@jax_only
def test_a_backend_without_snapshot_is_rejected_by_the_kit(plugins):
    plugins(nosnap=lambda: _Plugin("nosnap", missing=("snapshot", "restore")))
    problem = kit.small_problem("poisson1d")
    message = r"nosnap: its trainer lacks snapshot, restore \(required by gradpath.backends.protocol.Trainer"
    with pytest.raises(AssertionError, match=message):
        kit.check_contract("nosnap", problem)
    with pytest.raises(AssertionError, match=message):
        kit.check_resumes("nosnap", problem)


@jax_only
def test_an_undeclared_lanes_flag_is_rejected(plugins):
    class NoLanes(_Plugin):
        supports_lanes = None  # neither True nor False

    plugins(nolanes=lambda: NoLanes("nolanes"))
    with pytest.raises(AssertionError, match="nolanes: Backend.supports_lanes must be declared, True or False"):
        kit.check_contract("nolanes", kit.small_problem("poisson1d"))


def test_a_broken_problem_plugin_is_skipped_and_named(plugins):
    with pytest.warns(UserWarning, match=r"skipping problem plugin 'broken' \(gradpath_broken:Thing\) failed to load"):
        names = kit.problem_names_for_conformance()
    assert "broken" not in names and {"helmholtz", "poisson1d", "poisson2d"} <= set(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert kit.conformance_problem() == "helmholtz"
        assert kit.conformance_problem("not-there") == names[0]  # the first one that loads


@jax_only
@pytest.mark.filterwarnings("ignore:conformance. skipping:UserWarning")  # the fixture's broken problem plugin
def test_a_backend_is_checked_on_the_methods_it_declares_only(plugins, monkeypatch):
    plugins(m12=lambda: _Plugin("m12", methods=("M1", "M2")))
    assert kit.methods_for_conformance("m12") == ("M1", "M2")
    calls = []
    for check in ("check_contract", "check_derivatives", "check_equivalence", "check_loss_decreases",
                  "check_deterministic", "check_resumes"):
        monkeypatch.setattr(kit, check, lambda *a, check=check: calls.append((check, a[1].name, *a[2:3])))
    kit.check_backend("m12", ["poisson1d"])
    assert not [c for c in calls if c[2:] and c[2] in ("M3", "M4")], calls
    assert ("check_derivatives", "poisson1d", "M1") in calls and ("check_equivalence", "poisson1d", "M2") in calls
    # the single-problem checks run on the chosen problem (helmholtz by default), with annealing where declared
    assert ("check_deterministic", "helmholtz", "M2") in calls and ("check_resumes", "helmholtz", "M2") in calls
    with pytest.raises(UsageError, match="backend 'm12' does not offer method 'M3'; choose one of: M1, M2"):
        require_method("m12", "M3")
    # training refuses it too, before it builds anything
    with pytest.raises(UsageError, match="backend 'm12' does not offer method 'M3'"):
        train(get_problem("poisson1d"), TrainSettings(method="M3", steps=2, width=4, depth=1), "m12")


def _hessian_inputs():
    problem = get_problem("poisson1d")
    start = seed_start(problem, TrainSettings(width=4, depth=1, seed=0))
    batch = [b[0] for b in draw_batches(problem, start.batches, 1, 8, "float64")]
    return problem, start.params, start.mu, start.sigma, batch


def test_a_plugin_hessian_hook_is_reached_through_the_registry(plugins):
    seen = {}

    def hessian_matmat(problem, params, mu, sigma, batch, weights, keys, *, index, net, gate, dtype):
        seen.update(index=index, net=net, keys=keys, weights=list(weights))
        n = sum(params[k].size for k in keys)
        return n, lambda v: 2.0 * v

    plugins(hessplug=lambda: _Plugin("hessplug", hessian_matmat=hessian_matmat), nohess=lambda: _Plugin("nohess"))
    op = hessian_operator("hessplug", *_hessian_inputs(), [1.0, 3.0], term="boundary")
    assert seen == {"index": 1, "net": "mlp", "keys": ("W0", "W1"), "weights": [1.0, 3.0]}
    np.testing.assert_array_equal(op.matmat(np.ones((op.n, 2))), 2.0 * np.ones((op.n, 2)))
    with pytest.raises(UsageError, match="backend 'nohess' offers no Hessian products; choose one of: .*hessplug"):
        hessian_operator("nohess", *_hessian_inputs(), [1.0, 1.0])


def test_a_backend_can_bring_its_own_input_derivatives():
    """Step(input_derivatives=...) replaces the jets in the losses and predictions, and only there."""
    problem = get_problem("helmholtz")
    settings = TrainSettings(width=4, depth=1, dtype="float64")
    start = seed_start(problem, settings)
    batch = [b[0] for b in draw_batches(problem, start.batches, 1, 8, "float64")]
    asked = []

    def mine(xp, problem, params, x, mu, sigma, keys, *, net, gate):
        asked.append(tuple(keys))
        return derivatives(xp, problem, params, x, mu, sigma, keys, net=net, gate=gate)

    rule = Step(problem, settings, np, np.float64, value_and_grad=None, input_derivatives=mine)
    norm = {"mu": start.mu, "sigma": start.sigma}
    want = term_losses(np, problem, start.params, batch, start.mu, start.sigma, net="mlp", gate="code")
    np.testing.assert_array_equal(rule.losses(start.params, batch, norm), want)
    assert asked == [t.needs for t in problem.terms()]
    assert list(rule.derivatives(start.params, batch[0][0], ("u",), norm)) == ["u"] and asked[-1] == ("u",)


def _skeleton_backend():
    """The skeleton of docs/adding-a-backend.md, run with jax standing in for its framework ``fw``."""
    import sys
    import types
    from pathlib import Path

    import jax
    import jax.numpy as jnp

    text = (Path(__file__).resolve().parents[1] / "docs" / "adding-a-backend.md").read_text()
    code = text.split("## A skeleton", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    fw = types.ModuleType("fw")
    fw.jit, fw.cond, fw.value_and_grad, fw.numpy, fw.__version__ = \
        jax.jit, jax.lax.cond, jax.value_and_grad, jnp, jax.__version__
    namespace: dict = {}
    saved = {k: sys.modules.get(k) for k in ("fw", "fw.numpy")}
    sys.modules.update({"fw": fw, "fw.numpy": jnp})
    try:
        exec(compile(code, "docs/adding-a-backend.md", "exec"), namespace)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k)
            else:
                sys.modules[k] = v
    return namespace["FwBackend"]()


@jax_only
def test_the_documented_skeleton_compiles_under_jit_and_passes_the_kit(plugins):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)  # the kit runs float64; the skeleton leaves precision to the reader
    plugins(fw=_skeleton_backend)
    problem = kit.small_problem("poisson1d")
    kit.check_contract("fw", problem)
    kit.check_equivalence("fw", problem, "M4")  # annealing under the traced conditional
    kit.check_resumes("fw", problem, "M2", steps=10, gradient_every=5)
