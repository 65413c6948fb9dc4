"""One training step and the state it runs on, written once over ``xp`` for every backend.

A step (the authors' code, spec 3.2.5; paper Algorithm 1 for the annealing): the unweighted term
losses on the step's batch, the parameter gradient of sum_i lambda_i L_i in one reverse pass, an
Adam update with the decaying learning rate (gradpath.backends.adam), and every ``anneal_every``
steps, after the update and on the same batch, the per-term gradients at the new parameters and
the annealing rule (gradpath.backends.weighting).

The rule decides what that update reads (``Weighting.needs``): per-term gradients (the paper's
rules, :meth:`Step.anneal`), the NTK block traces from per-point parameter Jacobians (``ntk``,
also :meth:`Step.anneal`, every ``anneal_every`` steps: the paper's N) or the term losses alone
(``relobralo``, every step inside :meth:`Step.descend`, from the losses the step computes anyway,
with a Bernoulli lookback draw fed as one more batch input: :meth:`Step.lookback_inputs`). A
``losses`` rule keeps L(t-1) and L(0) in the state under ``balance``, only when it is used
(:meth:`StateArrays.with_rule_state`), so other runs' states and checkpoints keep their layout.

A framework supplies only what differs: its array namespace ``xp`` and float dtype, a
``value_and_grad`` with the signature of ``jax.value_and_grad``, and how the annealing branch
runs (:meth:`Step.step` takes the conditional; a trainer may instead call :meth:`Step.descend`
and :meth:`Step.anneal` as separate graphs). How the step is compiled, batched over seeds and
looped is the trainer's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gradpath.backends.adam import adam_update, learning_rate
from gradpath.backends.checkpoint import flatten, unflatten
from gradpath.backends.data import lookback_draws, lookback_key
from gradpath.backends.losses import Derivatives, derivatives, term_loss, term_losses, term_misfits
from gradpath.backends.settings import TrainSettings
from gradpath.problems.core import Problem

# value_and_grad(f, has_aux=False) -> g, with g(params) = (f(params), grad f(params)) as jax.value_and_grad
ValueAndGrad = Callable[..., Callable]
# cond(predicate, f, operand) -> f(operand) if predicate else operand (jax: lax.cond with an identity branch)
Cond = Callable[[Any, Callable[[Any], Any], Any], Any]
# vmap(f, in_axes) -> f mapped over the axes given (None: not mapped), with the signature of jax.vmap
Vmap = Callable[..., Callable]
# params, m, v (dicts by parameter name), weights, count, norm (mu, sigma); with a ``losses`` rule
# also balance (previous, initial: term losses; key: the lookback stream's key)
State = dict[str, Any]


class Step:
    """The framework-neutral maths of one training step of ``problem`` under ``settings``.

    Args:
        xp: the array namespace the step computes with (``jax.numpy``, ``array_api_compat.torch``, ...).
        dtype: the run's float dtype in ``xp`` (the step count is cast to it).
        value_and_grad: the framework's reverse mode (see :data:`ValueAndGrad`).
        input_derivatives: the network's input derivatives (default: gradpath's forward-mode jets,
            gradpath.backends.losses.derivatives); a backend with its own passes it here.
        vmap: the framework's vectorising map (see :data:`Vmap`); only the ``ntk`` rule uses it.

    Attributes:
        anneals: whether a separate annealing update (:meth:`anneal`) runs where :meth:`anneals_at`.
        balances: whether :meth:`descend` itself updates the loss weights (a ``losses`` rule).
    """

    def __init__(self, problem: Problem, settings: TrainSettings, xp: Any, dtype: Any, value_and_grad: ValueAndGrad,
                 input_derivatives: Derivatives = derivatives, vmap: Vmap | None = None) -> None:
        self.problem, self.settings, self.xp, self.dtype = problem, settings, xp, dtype
        self.value_and_grad, self.input_derivatives, self.vmap = value_and_grad, input_derivatives, vmap
        method = settings.method_spec
        self.net, self.gate = method.net, settings.gate
        self.weighting = settings.weighting_for(problem)
        self.n_terms = len(problem.terms())
        self.balances = method.anneal and self.weighting.needs == "losses"
        self.anneals = method.anneal and not self.balances
        self.every = self.weighting.every or settings.anneal_every

    def derivatives(self, params: dict, x: Any, keys: tuple[str, ...], norm: dict) -> dict[str, Any]:
        """The derivative keys of the network at ``x`` ``(n, d)`` (what ``Trainer.predict`` returns)."""
        return self.input_derivatives(self.xp, self.problem, params, x, norm["mu"], norm["sigma"], keys,
                                      net=self.net, gate=self.gate)

    def losses(self, params: dict, batch: list, norm: dict) -> Any:
        """The ``(n_terms,)`` unweighted term losses on one step's batch (one array per term)."""
        return term_losses(self.xp, self.problem, params, batch, norm["mu"], norm["sigma"], net=self.net,
                           gate=self.gate, input_derivatives=self.input_derivatives)

    def term_loss(self, index: int, params: dict, points: Any, norm: dict) -> Any:
        """The unweighted loss of term ``index`` alone (a scalar)."""
        return term_loss(self.xp, self.problem, index, params, points, norm["mu"], norm["sigma"], net=self.net,
                         gate=self.gate, input_derivatives=self.input_derivatives)

    def term_gradients(self, params: dict, batch: list, norm: dict) -> tuple[Any, list[dict]]:
        """The term losses and each term's parameter gradients, one reverse pass per term.

        Not a Jacobian of the loss vector (jacrev): that back-propagates a one-hot cotangent
        through every term's graph, zeros included, and makes the lambda update cost about two
        steps instead of about one.
        """
        pairs = [self.value_and_grad(lambda p, i=i: self.term_loss(i, p, batch[i], norm))(params)
                 for i in range(len(batch))]
        return self.xp.stack([value for value, _ in pairs]), [grads for _, grads in pairs]

    def term_misfits(self, index: int, params: dict, x: Any, norm: dict) -> tuple[Any, ...]:
        """Term ``index``'s pointwise misfit components at ``x`` ``(n, d)`` (gradpath.backends.losses.term_misfits)."""
        return term_misfits(self.xp, self.problem, index, params, x, norm["mu"], norm["sigma"], net=self.net,
                            gate=self.gate, input_derivatives=self.input_derivatives)

    def ntk_traces(self, params: dict, batch: list, norm: dict) -> Any:
        """tr K_ii of every term ``(n_terms,)``: the sum over the term's points x_k of |d r_i(x_k) / d theta|^2
        (Wang, Yu & Perdikaris 2022, Eqs. 4.4-4.6 and 6.5), by a vmap of per-point gradients.

        r_i is the term's pointwise misfit; a term of several regions (Helmholtz's four edges) or
        misfit components (the cavity's two momentum equations) sums over all of them, and the
        term's ``scale`` multiplies its trace (the trace of sqrt(scale) r_i, whose mean square is its
        loss). Summing over points (not averaging) makes tr K_ii batch_size times the trace of the
        NTK of the loss as gradpath writes it (a sum over regions of per-region means), the same
        choice for every problem: a term of four regions weighs as four.
        """
        xp, traces = self.xp, []
        for i, points in enumerate(batch[:self.n_terms]):
            regions, size, dim = points.shape
            x = xp.reshape(points, (regions * size, dim))
            total = 0.0
            for c in range(self._components(i)):
                def gradient(p, xk, i=i, c=c):  # d r_i^c(x_k) / d theta at one point
                    return self.value_and_grad(
                        lambda q: xp.reshape(self.term_misfits(i, q, xp.reshape(xk, (1, dim)), norm)[c], ()))(p)[1]

                grads = self.vmap(gradient, (None, 0))(params, x)  # (n_points, *shape) per parameter
                total = total + sum(xp.sum(g * g) for g in grads.values())
            scale = self.problem.terms()[i].scale
            traces.append(scale * total if scale != 1.0 else total)
        return xp.stack(traces)

    def _components(self, index: int) -> int:
        """How many misfit components term ``index`` has: its misfit evaluated once in numpy on dummy values."""
        term = self.problem.terms()[index]
        x = np.full((1, len(self.problem.inputs)), 0.5)
        misfit = term.misfit(np, x, {k: np.ones(1) for k in term.needs})
        return len(misfit) if isinstance(misfit, tuple) else 1

    def descend(self, state: State, batch: list) -> tuple[State, Any]:
        """The gradient of sum_i lambda_i L_i and one Adam update; returns the state with the step
        count advanced and the term losses before the update.

        The loss weights stay as they are, except under a ``losses`` rule (ReLoBRaLo), which updates
        them here from this step's losses and the lookback draw that ``batch`` ends with
        (:meth:`lookback_inputs`): the lambdas used from the next step on, as every rule's are.
        """
        s = self.settings
        batch, extra = batch[:self.n_terms], batch[self.n_terms:]

        def total(params):
            losses = self.losses(params, batch, state["norm"])
            return state["weights"] @ losses, losses

        (_, losses), grads = self.value_and_grad(total, has_aux=True)(state["params"])
        count = state["count"]
        step = self.xp.astype(count, self.dtype)
        lr = learning_rate(step, s.lr, s.lr_decay_rate, s.lr_decay_steps)
        params, m, v = adam_update(state["params"], grads, state["m"], state["v"], step, lr, eps=s.adam_eps,
                                   form=s.adam_form)
        new = dict(state, params=params, m=m, v=v, count=count + 1)
        if self.balances:
            new.update(self.rebalance(state, losses, extra[0]))
        return new, losses

    def rebalance(self, state: State, losses: Any, draw: Any) -> State:
        """A ``losses`` rule's update: the new ``weights`` and ``balance`` from this step's ``losses``.

        At step 0, L(0) and L(t-1) are this step's losses (replacing the initial state's
        placeholders), which makes every lambda_hat 1 and keeps the weights at 1.
        """
        xp, balance = self.xp, state["balance"]
        first = state["count"] == 0
        initial = xp.where(first, losses, balance["initial"])
        previous = xp.where(first, losses, balance["previous"])
        rho = xp.reshape(draw, ())
        weights = self.weighting.balance(xp, losses, previous, initial, state["weights"], rho,
                                         self.settings.anneal_alpha)
        return {"weights": weights, "balance": dict(balance, initial=initial, previous=losses)}

    def lookback_inputs(self, batches: list[np.ndarray], key: np.ndarray, first: int, lanes: int | None) -> list:
        """``batches`` (numpy, one array per term, steps on axis 0, or 1 with ``lanes``) with the lookback
        draws of those steps appended as one more batch-shaped input ``(steps, 1, 1, 1)`` (or
        ``(lanes, steps, 1, 1, 1)``) where the rule needs them; ``batches`` itself otherwise.

        Args:
            key: the state's ``balance/key`` as numpy (int32 ``(2,)``, or ``(lanes, 2)``).
            first: the step count before the first of these steps.
        """
        if not self.balances:
            return batches
        steps = batches[0].shape[0 if lanes is None else 1]
        draws = lookback_draws(key, first, steps, self.weighting.lookback)
        return [*batches, draws.reshape(*draws.shape, 1, 1, 1).astype(batches[0].dtype)]

    def anneal(self, params: dict, weights: Any, batch: list, norm: dict) -> Any:
        """New loss weights from the per-term gradients, or the NTK traces, at ``params`` (the annealing rule)."""
        batch = batch[:self.n_terms]
        if self.weighting.needs == "ntk":
            return self.weighting.from_traces(self.xp, self.ntk_traces(params, batch, norm), weights,
                                              self.settings.anneal_alpha)
        _, grads = self.term_gradients(params, batch, norm)
        return self.weighting.update(self.xp, grads, weights, self.settings.anneal_alpha)

    def anneals_at(self, count: Any) -> Any:
        """Whether the step numbered ``count`` (before it runs) updates the loss weights by :meth:`anneal`."""
        return count % self.every == 0

    def step(self, state: State, batch: list, cond: Cond) -> tuple[State, Any]:
        """One whole step: :meth:`descend`, then :meth:`anneal` under ``cond`` where it is due."""
        new, losses = self.descend(state, batch)
        if self.anneals:
            weights = cond(self.anneals_at(state["count"]),
                           lambda w: self.anneal(new["params"], w, batch, state["norm"]), state["weights"])
            new = dict(new, weights=weights)
        return new, losses


class StateArrays:
    """``init``, ``export``, ``snapshot`` and ``restore`` of gradpath.backends.protocol.Trainer, written once.

    A trainer mixes this in and defines ``n_terms``, ``lanes`` and three conversions:
    ``_array`` (numpy to a new framework array of the run's dtype on its device), ``_exact`` (the
    same, keeping the numpy dtype: a checkpoint's int32 count and float arrays) and ``_numpy``
    (a framework array to a numpy array of its own).
    """

    n_terms: int
    lanes: int | None
    rule: Step

    def _array(self, a: np.ndarray) -> Any:
        raise NotImplementedError

    def _exact(self, a: np.ndarray) -> Any:
        raise NotImplementedError

    def _numpy(self, a: Any) -> np.ndarray:
        raise NotImplementedError

    def init(self, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray) -> State:
        """The state of step 0: the parameters, zero Adam moments, loss weights, normalisation.

        The loss weights are the settings' ``loss_weights`` in term order (1 for a term not named;
        :meth:`gradpath.backends.settings.TrainSettings.initial_weights`), the same in every lane.
        """
        p = {k: self._array(v) for k, v in params.items()}
        # m and v get arrays of their own: torch would compile a graph of its own for aliased inputs
        zeros = [{k: self._array(np.zeros(np.shape(v))) for k, v in params.items()} for _ in "mv"]
        lead = () if self.lanes is None else (self.lanes,)
        settings, problem = getattr(self, "settings", None), getattr(self, "problem", None)
        first = (np.ones(self.n_terms) if settings is None or problem is None
                 else settings.initial_weights(problem))
        weights = np.broadcast_to(first, (*lead, self.n_terms)).copy()
        return {"params": p, "m": zeros[0], "v": zeros[1], "weights": self._array(weights),
                "count": self._exact(np.asarray(0, np.int32)),
                "norm": {"mu": self._array(mu), "sigma": self._array(sigma)}}

    def with_rule_state(self, state: State, params: dict[str, np.ndarray]) -> State:
        """``state`` (from :meth:`init`) with what the run's rule keeps besides the weights: a ``losses``
        rule's ``balance`` (L(0) and L(t-1), placeholders of 1 until step 0 sets them, and the
        lookback key of each seed, gradpath.backends.data.lookback_key); ``state`` itself otherwise.

        A trainer's ``init`` returns this, so that runs of the other rules keep their state layout."""
        if not self.rule.balances:
            return state
        lead = () if self.lanes is None else (self.lanes,)
        keys = lookback_key(params) if self.lanes is None else \
            np.stack([lookback_key({k: v[i] for k, v in params.items()}) for i in range(self.lanes)])
        ones = np.ones((*lead, self.n_terms))
        return dict(state, balance={"initial": self._array(ones), "previous": self._array(ones),
                                    "key": self._exact(keys)})

    def export(self, state: State) -> dict[str, np.ndarray]:
        """Parameters (``W0``, ``b0``, ...) and ``loss_weights`` as numpy arrays."""
        out = {k: self._numpy(v) for k, v in state["params"].items()}
        out["loss_weights"] = self._numpy(state["weights"])
        return out

    def snapshot(self, state: State) -> dict[str, np.ndarray]:
        """Every array of ``state`` as numpy, exactly, by path (gradpath.backends.checkpoint.flatten)."""
        return flatten(state, self._numpy)

    def restore(self, arrays: dict[str, np.ndarray]) -> State:
        """The state :meth:`snapshot` was taken of, on this trainer's device with the saved dtypes."""
        return unflatten(arrays, self._exact)
