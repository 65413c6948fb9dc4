"""One training step and the state it runs on, written once over ``xp`` for every backend.

A step (the authors' code, spec 3.2.5; paper Algorithm 1 for the annealing): the unweighted term
losses on the step's batch, the parameter gradient of sum_i lambda_i L_i in one reverse pass, an
Adam update with the decaying learning rate (gradpath.backends.adam), and every ``anneal_every``
steps, after the update and on the same batch, the per-term gradients at the new parameters and
the annealing rule (gradpath.backends.weighting).

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
from gradpath.backends.losses import Derivatives, derivatives, term_loss, term_losses
from gradpath.backends.settings import TrainSettings
from gradpath.problems.core import Problem

# value_and_grad(f, has_aux=False) -> g, with g(params) = (f(params), grad f(params)) as jax.value_and_grad
ValueAndGrad = Callable[..., Callable]
# cond(predicate, f, operand) -> f(operand) if predicate else operand (jax: lax.cond with an identity branch)
Cond = Callable[[Any, Callable[[Any], Any], Any], Any]
State = dict[str, Any]  # params, m, v (dicts by parameter name), weights, count, norm (mu, sigma)


class Step:
    """The framework-neutral maths of one training step of ``problem`` under ``settings``.

    Args:
        xp: the array namespace the step computes with (``jax.numpy``, ``array_api_compat.torch``, ...).
        dtype: the run's float dtype in ``xp`` (the step count is cast to it).
        value_and_grad: the framework's reverse mode (see :data:`ValueAndGrad`).
        input_derivatives: the network's input derivatives (default: gradpath's forward-mode jets,
            gradpath.backends.losses.derivatives); a backend with its own passes it here.
    """

    def __init__(self, problem: Problem, settings: TrainSettings, xp: Any, dtype: Any, value_and_grad: ValueAndGrad,
                 input_derivatives: Derivatives = derivatives) -> None:
        self.problem, self.settings, self.xp, self.dtype = problem, settings, xp, dtype
        self.value_and_grad, self.input_derivatives = value_and_grad, input_derivatives
        method = settings.method_spec
        self.net, self.gate, self.anneals = method.net, settings.gate, method.anneal
        self.weighting = settings.weighting_for(problem)

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

    def descend(self, state: State, batch: list) -> tuple[State, Any]:
        """The gradient of sum_i lambda_i L_i and one Adam update; returns the state with the step
        count advanced (loss weights unchanged) and the term losses before the update."""
        s = self.settings

        def total(params):
            losses = self.losses(params, batch, state["norm"])
            return state["weights"] @ losses, losses

        (_, losses), grads = self.value_and_grad(total, has_aux=True)(state["params"])
        count = state["count"]
        step = self.xp.astype(count, self.dtype)
        lr = learning_rate(step, s.lr, s.lr_decay_rate, s.lr_decay_steps)
        params, m, v = adam_update(state["params"], grads, state["m"], state["v"], step, lr, eps=s.adam_eps,
                                   form=s.adam_form)
        return dict(state, params=params, m=m, v=v, count=count + 1), losses

    def anneal(self, params: dict, weights: Any, batch: list, norm: dict) -> Any:
        """New loss weights from the per-term gradients at ``params`` (the annealing rule)."""
        _, grads = self.term_gradients(params, batch, norm)
        return self.weighting.update(self.xp, grads, weights, self.settings.anneal_alpha)

    def anneals_at(self, count: Any) -> Any:
        """Whether the step numbered ``count`` (before it runs) updates the loss weights."""
        return count % self.settings.anneal_every == 0

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

    def _array(self, a: np.ndarray) -> Any:
        raise NotImplementedError

    def _exact(self, a: np.ndarray) -> Any:
        raise NotImplementedError

    def _numpy(self, a: Any) -> np.ndarray:
        raise NotImplementedError

    def init(self, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray) -> State:
        """The state of step 0: the parameters, zero Adam moments, loss weights 1, normalisation."""
        p = {k: self._array(v) for k, v in params.items()}
        # m and v get arrays of their own: torch would compile a graph of its own for aliased inputs
        zeros = [{k: self._array(np.zeros(np.shape(v))) for k, v in params.items()} for _ in "mv"]
        lead = () if self.lanes is None else (self.lanes,)
        return {"params": p, "m": zeros[0], "v": zeros[1], "weights": self._array(np.ones((*lead, self.n_terms))),
                "count": self._exact(np.asarray(0, np.int32)),
                "norm": {"mu": self._array(mu), "sigma": self._array(sigma)}}

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
