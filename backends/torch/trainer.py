"""PyTorch trainer: sampling is done by numpy outside; each step runs as one graph, compiled or not.

The step's maths is gradpath.backends.step.Step with ``torch.func.grad_and_value``; its descent and
its annealing update are two graphs, and the host, which knows the step count, calls the second
every ``anneal_every`` steps. This file owns how they run.

Note:
    The step is traced with ``make_fx``, rather than given to ``torch.compile`` as Python: dynamo
    refuses to trace the trace-time numpy in the shared jets code (``np.poly1d`` in
    ``_tanh_polynomials``), while ``make_fx`` runs the Python as Python and records only tensor
    operations, ``torch.func`` gradients included, as one flat graph without double backward.
    The run's plan (:mod:`gradpath.backends.torch.compile_choice`, ``--compile``) then takes one of three
    routes: ``compiled`` (the graph compiled by inductor), ``traced`` (the graph run by
    TorchScript's interpreter: the operations of the eager step without Python and functorch in
    between, 2.8x faster here, no compiler; equal to eager to rounding, not bit for bit) or
    ``eager`` (the Python step, for runs too short to repay tracing). Whatever fails to trace or
    compile runs eagerly instead, after one warning.

    With ``lanes=n`` the trainer trains n seeds at once: every state leaf but the step count gets
    a leading seed axis and ``torch.func.vmap`` batches the per-seed step, the annealing update,
    the prediction and the gradients (make_fx records the batched operations).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import array_api_compat.torch as xp
import numpy as np
import torch
import torch.utils._pytree as pytree
from torch.fx.experimental.proxy_tensor import make_fx

from gradpath.backends.devices import cpu_name
from gradpath.backends.methods import METHODS
from gradpath.backends.protocol import ChunkOutput
from gradpath.backends.settings import TrainSettings
from gradpath.backends.step import Step, StateArrays
from gradpath.backends.torch import compile_choice, packages
from gradpath.backends.torch.hessian import hessian_matmat
from gradpath.problems.core import Problem
from gradpath.problems.errors import UsageError

_EAGER = object()  # marks a graph that failed to compile and runs eagerly from then on
_TIMED_CHUNKS = 5  # full chunks timed for the compile ledger


@contextlib.contextmanager
def _compute_settings(threads: int | None) -> Iterator[None]:
    """True float32 matmuls (no TF32 on GPUs, no bf16 on CPUs), and ``threads`` CPU threads if given.

    Both are process-wide torch settings, so they are set only while the trainer computes and
    restored afterwards; inductor reads both when it generates code, so compiling happens inside too.
    """
    precision, n = torch.get_float32_matmul_precision(), torch.get_num_threads()
    torch.set_float32_matmul_precision("highest")
    if threads is not None and threads != n:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        if threads is not None and threads != n:
            torch.set_num_threads(n)


def _interpreted(graph: Callable, args: tuple) -> Callable:
    """``graph`` (a make_fx graph) run by TorchScript's graph interpreter rather than by Python.

    The graph holds about a thousand small aten operations a step; calling them from its generated
    Python code costs about 1.5 us each on top of the operation itself, the interpreter less (1.4x
    faster than the graph's Python, 2.8x faster than the eager step, which also pays functorch; it
    agrees with eager to rounding). No fuser is involved (the CPU wheels have no LLVM),
    so nothing is compiled. Where TorchScript cannot take the graph, the graph runs as it is.
    """
    flat, in_spec = pytree.tree_flatten(args)
    _, out_spec = pytree.tree_flatten(graph(*args))

    class Flat(torch.nn.Module):  # TorchScript traces tensors in and out, not dicts of them
        def forward(self, *leaves):
            return tuple(pytree.tree_leaves(graph(*pytree.tree_unflatten(list(leaves), in_spec))))

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice, and its tracer's advice
            scripted = torch.jit.trace(Flat(), tuple(flat), check_trace=False)
    except Exception:  # noqa: BLE001 - the graph itself computes the same step
        return graph

    def run(*a):
        with torch.no_grad():
            out = scripted(*pytree.tree_leaves(a))
        return pytree.tree_unflatten(list(out), out_spec)

    return run


def _value_and_grad(f: Callable, has_aux: bool = False) -> Callable:
    """``torch.func.grad_and_value`` with the signature and result order of ``jax.value_and_grad``."""
    grad_and_value = torch.func.grad_and_value(f, has_aux=has_aux)

    def run(params):
        grads, value = grad_and_value(params)
        return value, grads

    return run


class TorchBackend:
    """Builds :class:`TorchTrainer` objects (see gradpath.backends.protocol.Backend)."""

    name = "torch"
    supports_lanes = True  # trainer(..., lanes=n) trains n seeds in one vectorised program
    methods = tuple(METHODS)
    hessian_matmat = staticmethod(hessian_matmat)  # forward-over-reverse products (backends/torch/hessian.py)

    def resolve_device(self, device: str) -> str:
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: torch sees no CUDA device (is a CUDA build of torch installed?); "
                             "choose one of: auto, cpu")
        return device

    def device_name(self, device: str) -> str:
        if device == "cuda":
            return torch.cuda.get_device_name(0)
        return cpu_name()

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def trainer(self, problem: Problem, settings: TrainSettings, device: str,
                lanes: int | None = None) -> TorchTrainer:
        return TorchTrainer(problem, settings, device, lanes)


class TorchTrainer(StateArrays):
    """See gradpath.backends.protocol.Trainer. State is a dict of torch tensors, never changed in place.

    Note:
        On the CPU the trainer computes with one thread (set while it runs, restored after):
        the kernels of one step are far too small to share between cores, and two OpenMP threads
        per run collapse as soon as anything else keeps the other core busy (one run per core
        is the way to use a multi-core machine; spec performance-notes).
    """

    threads_on_cpu = 1

    def __init__(self, problem: Problem, settings: TrainSettings, device: str, lanes: int | None = None) -> None:
        self.problem, self.settings = problem, settings
        self.dtype = getattr(torch, settings.dtype)
        self.device = torch.device(device)
        self.threads = self.threads_on_cpu if self.device.type == "cpu" else None
        self.rule = Step(problem, settings, xp, self.dtype, _value_and_grad,
                         vmap=lambda f, in_axes: torch.func.vmap(f, in_dims=in_axes))
        self.n_terms = len(problem.terms())
        self.lanes = lanes
        self._compiled: dict[Hashable, Any] = {}  # a compiled graph (or _EAGER) per function and input shapes
        self.plan = compile_choice.plan(problem, settings, device, lanes)
        self._timed: list[float] = []  # ms per step of full chunks, for the ledger (compile_choice)
        self._loaded = 0  # graphs loaded from compiled packages rather than compiled here
        self._chunk_steps = min(settings.log_every, settings.steps)

    def keep_route(self, route: str) -> None:
        """Run the steps by ``route`` (compiled, traced or eager) whatever the plan said: a resumed run
        goes on as its checkpointed process ran, since the routes round differently."""
        if route not in compile_choice.ROUTES:
            raise ValueError(f"unknown route {route!r}; choose one of: {', '.join(compile_choice.ROUTES)}")
        self.plan = dataclasses.replace(self.plan, route=route)

    @property
    def compilation(self) -> dict[str, Any]:
        """How this trainer runs its steps (``route``: compiled, traced or eager) and why, for the run's manifest."""
        return self.plan.as_dict()

    def _lanewise(self, fn: Callable, in_dims: Any, out_dims: Any = 0) -> Callable:
        """``fn`` itself for a one-seed trainer, else its vmap over the seed axis."""
        return fn if self.lanes is None else torch.func.vmap(fn, in_dims=in_dims, out_dims=out_dims)

    def _chunk(self, state, batches):
        # batches: (steps, ...) per term, or (lanes, steps, ...) for a multi-seed trainer
        axis = 0 if self.lanes is None else 1
        steps = batches[0].shape[axis]
        losses_all = torch.empty((steps, *state["weights"].shape), dtype=self.dtype, device=self.device)
        weights_all = torch.empty_like(losses_all)
        shapes = tuple(b.shape[:axis] + b.shape[axis + 1:] for b in batches)
        # the count is shared by all seeds; torch matches a dict of dims to the state by key order
        axes = {k: None if k == "count" else 0 for k in state}
        step = self._lanewise(self.rule.descend, (axes, 0), (axes, 0))
        anneal = self._lanewise(self.rule.anneal, 0)
        first = int(state["count"])  # one read per chunk: the host decides which steps anneal
        for i in range(steps):
            batch = [b.select(axis, i) for b in batches]
            state, losses = self._run(("step", shapes), step, state, batch)
            if self.rule.anneals and self.rule.anneals_at(first + i):
                # a graph of its own, called every anneal_every steps: each graph is branch-free,
                # and the step's graph is compiled once instead of twice
                weights = self._run(("anneal", shapes), anneal, state["params"], state["weights"], batch,
                                    state["norm"])
                state = dict(state, weights=weights)
            losses_all[i] = losses
            weights_all[i] = state["weights"]
        if self.lanes is not None:
            losses_all, weights_all = losses_all.transpose(0, 1), weights_all.transpose(0, 1)
        return state, losses_all, weights_all

    # -- compilation -----------------------------------------------------------------------------
    def _run(self, key: Hashable, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` by the plan's route: through the graph for ``key`` (traced, and compiled on the
        compiled route, on first use), or eagerly.

        ``key`` must name everything the graph is specialised on besides the trainer itself:
        the Python-level choices in ``fn`` and the input shapes, since make_fx bakes both in.
        """
        route = self.plan.route
        if route == "traced" and key[0] == "predict":
            route = "eager"  # a few calls on large arrays: Python's overhead is small there, tracing is not
        graph = self._compiled.get(key)
        if route == "eager" or graph is _EAGER:
            return fn(*args)
        try:
            if graph is None:
                with warnings.catch_warnings():
                    # inductor's own deprecation notices are not the user's business, and
                    # under -W error they would make every compile fall back to eager
                    warnings.simplefilter("ignore", DeprecationWarning)
                    warnings.simplefilter("ignore", FutureWarning)
                    if route == "compiled" and packages.available():
                        # an AOTInductor package: loaded without tracing when a run of this
                        # configuration compiled it before
                        graph, loaded = packages.compiled(packages.package_path(self.plan.key, key, args), fn, args)
                        self._loaded += loaded
                    else:
                        # through a lambda: make_fx counts a bound method's ``self`` as an argument
                        graph = make_fx(lambda *a: fn(*a))(*args)
                        graph = torch.compile(graph, fullgraph=True, dynamic=False) if route == "compiled" \
                            else _interpreted(graph, args)
                    self._compiled[key] = graph
                    return graph(*args)  # torch.compile compiles on the first call
            return graph(*args)
        except Exception as exc:  # never fail a run for the compiler: the eager step is the same maths
            why = " ".join(str(exc).split())[:300]  # inductor errors span many lines
            doing = "compiling" if route == "compiled" else "tracing"
            warnings.warn(f"torch backend: {doing} {key[0]!r} failed ({type(exc).__name__}: {why}); "
                          "running it eagerly (slower, same results)", RuntimeWarning, stacklevel=3)
            self._compiled[key] = _EAGER
            if key[0] != "predict":  # the steps themselves run eagerly now: say so in the manifest
                self.plan = dataclasses.replace(self.plan, route="eager",
                                                reason=f"{doing} failed ({type(exc).__name__}); {self.plan.reason}")
        return fn(*args)

    # -- protocol --------------------------------------------------------------------------------
    def init(self, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray) -> dict[str, Any]:
        """The state of step 0 (gradpath.backends.step.StateArrays.init), with the rule's own entries."""
        return self.with_rule_state(super().init(params, mu, sigma), params)

    def _inputs(self, state, batches):
        """The chunk's batches with the rule's per-step draws appended (Step.lookback_inputs), if it has any."""
        if not self.rule.balances:
            return batches
        return self.rule.lookback_inputs(batches, self._numpy(state["balance"]["key"]), int(state["count"]), self.lanes)

    def _array(self, a: np.ndarray) -> torch.Tensor:
        # torch.tensor copies: no tensor shares memory with the caller's numpy arrays
        return torch.tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def _exact(self, a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, device=self.device)  # keeps the saved dtype (int32 count, the run's floats)

    def _numpy(self, a: torch.Tensor) -> np.ndarray:
        return a.cpu().numpy().copy()

    def warmup(self, state, batches):
        t0 = time.perf_counter()
        state = copy.deepcopy(state)  # warm-up steps run for real: keep the caller's state as it is
        state["count"] = torch.zeros_like(state["count"])  # step 0 anneals: one step compiles everything
        batches = [self._array(b) for b in self._inputs(state, [b[:1] if self.lanes is None else b[:, :1]
                                                                   for b in batches])]
        with _compute_settings(self.threads):
            self._chunk(state, batches)
            x = self.problem.test_grid()
            self.predict(state, x, self.problem.solution_needs)
        self.sync()
        seconds = time.perf_counter() - t0
        # what tracing or compiling (from these caches) cost, for the next run's choice (compile_choice)
        if self.plan.route == "compiled":
            warm = self._loaded > 0 or self.plan.cache == "warm"
            compile_choice.record(self.plan.key, **{f"{'warm' if warm else 'cold'}_compile_s": seconds,
                                                    "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")})
        elif self.plan.route == "traced":
            compile_choice.record(self.plan.key, trace_s=seconds)
        return seconds

    def train(self, state, batches):
        t0 = time.perf_counter()
        with _compute_settings(self.threads):
            state, losses, weights = self._chunk(state, [self._array(b) for b in self._inputs(state, batches)])
        out = ChunkOutput(losses.cpu().numpy(), weights.cpu().numpy())  # waits for the device
        steps = batches[0].shape[0 if self.lanes is None else 1]
        if steps == self._chunk_steps and len(self._timed) < _TIMED_CHUNKS:
            # the median of the first few full chunks, written as they come (a short run has few)
            self._timed.append(1e3 * (time.perf_counter() - t0) / steps)
            compile_choice.record(self.plan.key, **{f"{self.plan.route}_ms": float(np.median(self._timed))})
        return state, out

    def predict(self, state, x, keys):
        x, keys = self._array(x), tuple(keys)
        predict = self._lanewise(lambda p, x, n: self.rule.derivatives(p, x, keys, n), (0, None, 0))
        with _compute_settings(self.threads):
            out = self._run(("predict", keys, tuple(x.shape)), predict, state["params"], x, state["norm"])
        return {k: v.cpu().numpy() for k, v in out.items()}

    def gradients(self, state, batch):
        # eager on purpose: called once per comparison, where compiling would cost seconds for milliseconds
        batch = [self._array(b) for b in batch]
        with _compute_settings(self.threads):
            if self.lanes is None:  # plain autograd: functorch's first use imports dynamo, a second
                losses, grads = self._autograd_term_gradients(state["params"], batch, state["norm"])
            else:
                losses, grads = self._lanewise(self.rule.term_gradients, 0)(state["params"], batch, state["norm"])
        return losses.cpu().numpy(), [{k: v.cpu().numpy() for k, v in g.items()} for g in grads]

    def _autograd_term_gradients(self, params, batch, norm):
        """``Step.term_gradients`` by ``torch.autograd.grad`` (the same sums, outside functorch)."""
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        losses, grads = [], []
        with torch.enable_grad():
            for i in range(len(batch)):
                loss = self.rule.term_loss(i, leaves, batch[i], norm)
                # a term may not depend on every parameter (u_xx not on the output bias): zeros, as functorch
                grads.append(dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()), allow_unused=True,
                                                                  materialize_grads=True))))
                losses.append(loss.detach())
        return torch.stack(losses), grads

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
