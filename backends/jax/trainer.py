"""JAX trainer: sampling is done by numpy outside; everything per step runs in one compiled loop.

The step's maths is gradpath.backends.step.Step with ``jax.value_and_grad`` and, for the annealing
update, ``jax.lax.cond``; this file owns how it runs: a chunk of steps is one ``jax.jit``-ed
``fori_loop``.

With ``lanes=n`` the trainer trains n seeds at once: every state leaf but the step count gets a
leading seed axis, and ``jax.vmap`` turns the per-seed step into one batched step. The step count
stays shared and unbatched, so the annealing ``lax.cond`` remains a real branch (a batched
predicate would turn it into a select that computes the per-term Jacobian at every step).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradpath.backends.devices import cpu_name
from gradpath.backends.jax.hessian import hessian_matmat
from gradpath.backends.methods import METHODS
from gradpath.backends.protocol import ChunkOutput
from gradpath.backends.settings import TrainSettings
from gradpath.backends.step import Step, StateArrays
from gradpath.problems.core import Problem
from gradpath.problems.errors import UsageError


def _gpu_devices() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


def _full_precision():
    """True float32 matmuls: on GPUs jax would otherwise use TF32 (10-bit mantissa) for float32."""
    return jax.default_matmul_precision("highest")


class JaxBackend:
    """Builds :class:`JaxTrainer` objects (see gradpath.backends.protocol.Backend)."""

    name = "jax"
    supports_lanes = True  # trainer(..., lanes=n) trains n seeds in one vectorised program
    methods = tuple(METHODS)
    hessian_matmat = staticmethod(hessian_matmat)  # forward-over-reverse products (backends/jax/hessian.py)

    def resolve_device(self, device: str) -> str:
        if device == "auto":
            return "cuda" if _gpu_devices() else "cpu"
        if device == "cuda" and not _gpu_devices():
            raise UsageError("--device cuda: jax sees no CUDA device (is jax[cuda] installed?); choose one of: auto, cpu")
        return device

    def device_name(self, device: str) -> str:
        if device == "cuda":
            return _gpu_devices()[0].device_kind
        return cpu_name()

    def versions(self) -> dict[str, str]:
        import jaxlib
        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def trainer(self, problem: Problem, settings: TrainSettings, device: str, lanes: int | None = None) -> JaxTrainer:
        return JaxTrainer(problem, settings, device, lanes)


def _lane_axes(state: dict) -> dict:
    """Which state entries carry the seed axis in a multi-seed trainer: all but the shared step count
    (a rule's own entries, such as ``balance``, included)."""
    return {k: None if k == "count" else 0 for k in state}


def _cond(predicate, update, weights):
    """``update(weights)`` where ``predicate`` holds: a real branch, since the count is never batched."""
    return jax.lax.cond(predicate, update, lambda w: w, weights)


class JaxTrainer(StateArrays):
    """See gradpath.backends.protocol.Trainer. State is a dict of jax arrays (a pytree)."""

    def __init__(self, problem: Problem, settings: TrainSettings, device: str, lanes: int | None = None) -> None:
        if settings.dtype == "float64":
            # jax computes in float32 unless x64 is on; this is process-wide, and float32 runs
            # stay float32 afterwards because every array here is created with an explicit dtype
            jax.config.update("jax_enable_x64", True)
        self.problem, self.settings = problem, settings
        self.dtype = jnp.dtype(settings.dtype)
        self.device = _gpu_devices()[0] if device == "cuda" else jax.devices("cpu")[0]
        self.chunk = min(settings.log_every, settings.steps)
        self.rule = Step(problem, settings, jnp, self.dtype, jax.value_and_grad, vmap=jax.vmap)
        self.n_terms = len(problem.terms())
        self.lanes = lanes
        self._compiled = None
        self._last = None  # the newest state, which sync() waits for
        self._chunk_jit = jax.jit(self._chunk)
        self._predict_jit = jax.jit(self._predict, static_argnums=(2,))
        self._gradients_jit = jax.jit(self._lane_gradients)

    @property
    def compilation(self) -> dict[str, Any]:
        """How this trainer runs its steps, for the run's manifest: always one compiled XLA program."""
        return {"route": "compiled", "reason": "jax always compiles (jax.jit)", "cache": None, "ledger_key": None}

    # -- pure functions --------------------------------------------------------------------------
    def _term_gradients(self, params, batch, norm):
        with _full_precision():
            return self.rule.term_gradients(params, batch, norm)

    def _step(self, state, batch):
        return self.rule.step(state, batch, _cond)

    def _chunk(self, state, batches, n_steps):
        with _full_precision():
            return self._chunk_loop(state, batches, n_steps)

    def _chunk_loop(self, state, batches, n_steps):
        step = self._step
        if self.lanes is not None:
            axes = _lane_axes(state)
            step = jax.vmap(self._step, in_axes=(axes, 0), out_axes=(axes, 0))
        record = jnp.zeros((self.chunk, *state["weights"].shape), self.dtype)
        at = (lambda b, i: b[i]) if self.lanes is None else (lambda b, i: b[:, i])  # batches: (lanes, steps, ...)

        def body(i, carry):
            state, losses_all, weights_all = carry
            state, losses = step(state, [at(b, i) for b in batches])
            return state, losses_all.at[i].set(losses), weights_all.at[i].set(state["weights"])

        return jax.lax.fori_loop(0, n_steps, body, (state, record, record))

    def _predict(self, params, x, keys, norm):
        with _full_precision():
            def one(params, norm):
                return self.rule.derivatives(params, x, keys, norm)

            return one(params, norm) if self.lanes is None else jax.vmap(one)(params, norm)

    def _lane_gradients(self, params, batch, norm):
        if self.lanes is None:
            return self._term_gradients(params, batch, norm)
        return jax.vmap(self._term_gradients)(params, batch, norm)

    # -- protocol --------------------------------------------------------------------------------
    def init(self, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray) -> dict[str, Any]:
        """The state of step 0 (gradpath.backends.step.StateArrays.init), with the rule's own entries."""
        return self.with_rule_state(super().init(params, mu, sigma), params)

    def _inputs(self, state, batches):
        """The chunk's batches with the rule's per-step draws appended (Step.lookback_inputs), if it has any."""
        if not self.rule.balances:
            return batches
        # the count is read once a chunk, as torch's trainer does: train already waits for each chunk
        return self.rule.lookback_inputs(batches, np.asarray(state["balance"]["key"]), int(state["count"]), self.lanes)

    def _array(self, a: np.ndarray) -> jax.Array:
        return jax.device_put(jnp.asarray(a, dtype=self.dtype), self.device)

    def _exact(self, a: np.ndarray) -> jax.Array:
        # jnp.asarray keeps the saved dtype (the int32 step count, the run's float dtype)
        return jax.device_put(jnp.asarray(a), self.device)

    def _numpy(self, a: jax.Array) -> np.ndarray:
        return np.asarray(a)

    def _padded(self, batches):
        axis = 0 if self.lanes is None else 1
        steps = batches[0].shape[axis]
        pad = [(0, 0)] * axis + [(0, self.chunk - steps)] + [(0, 0)] * 3
        return [self._array(np.pad(b, pad, mode="edge")) for b in batches], jnp.asarray(steps, jnp.int32)

    def warmup(self, state, batches):
        t0 = time.perf_counter()
        padded, n = self._padded(self._inputs(state, batches))
        self._compiled = self._chunk_jit.lower(state, padded, n).compile()
        x = self.problem.test_grid()
        self.predict(state, x, self.problem.solution_needs)
        return time.perf_counter() - t0

    def step_flops(self) -> float:
        """XLA's count of the floating-point operations in one training step, from the compiled
        chunk (so after :meth:`warmup`). XLA's cost analysis counts a loop's body once, whatever its
        trip count, so this is one step (with every seed of a multi-seed trainer); an annealing
        ``lax.cond`` is counted as XLA counts a conditional, not weighted by how often it runs."""
        if self._compiled is None:
            raise RuntimeError("step_flops needs the compiled step: call warmup first")
        cost = self._compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost  # a list of one dict in older jax
        return float(cost["flops"])

    def train(self, state, batches):
        if self._compiled is None:
            self.warmup(state, batches)
        padded, n = self._padded(self._inputs(state, batches))
        state, losses, weights = self._compiled(state, padded, n)
        self._last = state
        losses, weights = np.asarray(losses), np.asarray(weights)
        if self.lanes is None:
            steps = batches[0].shape[0]
            return state, ChunkOutput(losses[:steps], weights[:steps])
        steps = batches[0].shape[1]  # recorded as (steps, lanes, terms); reported lanes first
        return state, ChunkOutput(losses[:steps].swapaxes(0, 1), weights[:steps].swapaxes(0, 1))

    def predict(self, state, x, keys):
        out = self._predict_jit(state["params"], self._array(x), tuple(keys), state["norm"])
        return {k: np.asarray(v) for k, v in out.items()}

    def gradients(self, state, batch):
        batch = [self._array(b) for b in batch]
        losses, grads = self._gradients_jit(state["params"], batch, state["norm"])
        return np.asarray(losses), [{k: np.asarray(v) for k, v in g.items()} for g in grads]

    def sync(self):
        if self._last is not None:  # the newest state: everything queued before it is done once it is
            jax.block_until_ready(self._last)
