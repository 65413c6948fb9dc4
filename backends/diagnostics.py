"""Gradient-pathology diagnostics, framework-free: per-layer gradient statistics and histograms,
and eigenvalues of a Hessian given only as a product with vectors (spec 2.5, 9; paper Figs. 2-5, 7, 11-13).

Gradients come as numpy dicts, one per loss term, as ``Trainer.gradients`` returns them; Hessians
come as a ``matmat`` callable ``V (n, k) -> H V (n, k)`` built by a backend's optional
``hessian_matmat`` hook (gradpath.backends.protocol.HessianMatmat) from the loss of :func:`flat_loss`,
so Lanczos, power iteration and the dense spectrum are written once here.

Note:
    The authors' code keeps gradients and Hessians with respect to the MLP weight matrices only
    (no biases, no encoder weights of the gated net; spec 2.5, 2.6, 9). That is the default
    parameter set ``weights``; ``all`` takes every parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradpath.backends.init import weight_keys
from gradpath.backends.losses import term_losses
from gradpath.problems.errors import UsageError, unknown_choice

PARAMETER_SETS = {"weights": "the MLP weight matrices W0..WL only, as the authors' statistics and Hessians",
                  "all": "every parameter: weights, biases and the gated net's encoders"}
SPECTRUM_METHODS = ("lanczos", "power")

# Histogram bins: |g| on a log grid, 16 bins per decade from 1e-12 to 1e4, mirrored for negative
# values, plus one bin below -1e4 and one at or above 1e4, so every entry is counted in one of
# 515 bins whatever its size. The central bin [-1e-12, 1e-12) holds exact zeros.
_MAGNITUDES = 10.0 ** np.linspace(-12.0, 4.0, 16 * 16 + 1)
HIST_EDGES = np.concatenate([-_MAGNITUDES[::-1], _MAGNITUDES])
N_BINS = len(HIST_EDGES) + 1


def bin_edges() -> np.ndarray:
    """The ``N_BINS + 1`` edges of the histogram bins, with ``-inf`` and ``inf`` at the ends."""
    return np.concatenate([[-np.inf], HIST_EDGES, [np.inf]])


def _key_order(key: str) -> tuple[int, int, int, str]:
    # W_l and b_l interleaved by layer, then the gated net's encoders E1, c1, E2, c2, then anything else
    if key[:1] in ("W", "b") and key[1:].isdigit():
        return (0, int(key[1:]), key[0] == "b", "")
    if key[:1] in ("E", "c") and key[1:].isdigit():
        return (1, int(key[1:]), key[0] == "c", "")
    return (2, 0, 0, key)


def parameter_keys(params: dict[str, Any], parameter_set: str = "weights") -> list[str]:
    """Names of the parameters in ``parameter_set`` in a fixed order (the same in every backend).

    Args:
        params: parameters by name (``W0``, ``b0``, ..., ``E1``, ``c1``, ...).
        parameter_set: ``weights`` (W0..WL, the authors' choice) or ``all``.
    """
    if parameter_set not in PARAMETER_SETS:
        raise unknown_choice("parameter set", parameter_set, PARAMETER_SETS)
    if parameter_set == "weights":
        return weight_keys(params)
    return sorted(params, key=_key_order)


# -- gradients -------------------------------------------------------------------------------------

def weighted(grads: Sequence[dict[str, np.ndarray]], weights: Sequence[float]) -> list[dict[str, np.ndarray]]:
    """Each term's gradient times its loss weight: ``grad(lambda_i L_i)``, what the update sees.

    The authors' histograms and annealing statistics use these (legend "grad lambda_ub L_ub", spec 3.2.2).
    """
    return [{k: float(w) * np.asarray(g[k], np.float64) for k in g} for g, w in zip(grads, weights)]


def gradient_statistics(grads: Sequence[dict[str, np.ndarray]], names: Sequence[str],
                        keys: Sequence[str]) -> dict[str, float]:
    """Per-layer and per-term statistics of |grad|, as history columns.

    Args:
        grads: one gradient dict per term, residual first (see :func:`weighted`).
        names: the terms' names, e.g. ``("residual", "boundary")``.
        keys: the parameters to describe, e.g. from :func:`parameter_keys`.

    Returns:
        ``grad_max_<term>_<key>`` and ``grad_mean_<term>_<key>`` (max and mean of |grad| over the
        entries of one parameter); for each term after the first, ``grad_ratio_<term>_<key>``, the
        per-layer ratio mean|grad L_residual| / mean|grad L_term|, and ``grad_lambda_hat_<term>``,
        max|grad L_residual| over all ``keys`` divided by the mean of the per-layer means of
        |grad L_term|: the authors' annealing estimate (spec 3.2.4), 1 when the terms are balanced
        in their sense.
    """
    out: dict[str, float] = {}
    means = np.empty((len(names), len(keys)))
    maxima = np.empty_like(means)
    for i, (name, g) in enumerate(zip(names, grads)):
        for j, k in enumerate(keys):
            a = np.abs(np.asarray(g[k], np.float64))
            maxima[i, j], means[i, j] = a.max(), a.mean()
            out[f"grad_max_{name}_{k}"] = float(maxima[i, j])
            out[f"grad_mean_{name}_{k}"] = float(means[i, j])
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero gradient gives inf: a real finding
        for i, name in enumerate(names[1:], start=1):
            for j, k in enumerate(keys):
                out[f"grad_ratio_{name}_{k}"] = float(means[0, j] / means[i, j])
            out[f"grad_lambda_hat_{name}"] = float(maxima[0].max() / means[i].mean())
    return out


def gradient_histograms(grads: Sequence[dict[str, np.ndarray]], keys: Sequence[str]) -> np.ndarray:
    """Counts of every gradient entry in the fixed bins of :func:`bin_edges`.

    Returns:
        ``(n_terms, len(keys), N_BINS)`` int64 counts; the counts of ``[t, l]`` sum to the size
        of parameter ``keys[l]`` (NaN entries land in the top bin).
    """
    out = np.zeros((len(grads), len(keys), N_BINS), np.int64)
    for i, g in enumerate(grads):
        for j, k in enumerate(keys):
            values = np.asarray(g[k], np.float64).ravel()
            out[i, j] = np.bincount(np.searchsorted(HIST_EDGES, values, side="right"), minlength=N_BINS)
    return out


def histogram_quantile(counts: np.ndarray, q: float) -> float:
    """The bin edge below which at least a fraction ``q`` of |values| lies (from one histogram's counts).

    Raises:
        ValueError: ``q`` outside (0, 1], or an empty histogram (no quantile to read).
    """
    if not 0 < q <= 1:
        raise ValueError(f"quantile q must lie in (0, 1], got {q!r}")
    if counts.sum() <= 0:
        raise ValueError("an empty histogram (all counts 0) has no quantile")
    edges = bin_edges()
    mags = np.maximum(np.abs(edges[:-1]), np.abs(edges[1:]))  # the largest |value| a bin can hold
    order = np.argsort(mags, kind="stable")
    cum = np.cumsum(counts[order]) / counts.sum()
    return float(mags[order][np.searchsorted(cum, q)])


@dataclass
class GradientRecord:
    """Gradient histograms of one run at its checkpoints (what ``gradients.npz`` holds).

    Attributes:
        terms: the loss terms, residual first.  keys: the parameters described (one per layer).
        sizes: entries per parameter (each histogram's total).
        steps: ``(n_checkpoints,)`` steps done at each checkpoint.
        weights: ``(n_checkpoints, n_terms)`` loss weights lambda there (histograms are of grad(lambda_i L_i)).
        counts: ``(n_checkpoints, n_terms, n_keys, N_BINS)`` counts in the bins of :func:`bin_edges`.
    """

    terms: tuple[str, ...]
    keys: tuple[str, ...]
    sizes: tuple[int, ...]
    steps: list[int] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)

    def add(self, step: int, weights: Sequence[float], counts: np.ndarray) -> None:
        """Append one checkpoint's histograms."""
        self.steps.append(int(step))
        self.weights.append(np.asarray(weights, np.float64))
        self.counts.append(np.asarray(counts, np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        """The record as named numpy arrays (for ``np.savez``; strings as unicode arrays)."""
        n = len(self.steps)
        return {"terms": np.array(self.terms), "keys": np.array(self.keys), "sizes": np.array(self.sizes, np.int64),
                "steps": np.array(self.steps, np.int64), "edges": HIST_EDGES,
                "weights": np.array(self.weights, np.float64).reshape(n, len(self.terms)),
                "counts": np.array(self.counts, np.int32).reshape(n, len(self.terms), len(self.keys), N_BINS)}

    @classmethod
    def from_arrays(cls, arrays: Any) -> GradientRecord:
        """The record from :meth:`arrays` (e.g. an opened ``npz``); bins other than ours are refused."""
        if not np.array_equal(np.asarray(arrays["edges"]), HIST_EDGES):
            raise UsageError("gradient histograms were binned with other edges than this gradpath's")
        return cls(tuple(str(t) for t in arrays["terms"]), tuple(str(k) for k in arrays["keys"]),
                   tuple(int(s) for s in arrays["sizes"]), [int(s) for s in arrays["steps"]],
                   list(np.asarray(arrays["weights"], np.float64)), list(np.asarray(arrays["counts"], np.int64)))


# -- Hessian eigenvalues ---------------------------------------------------------------------------

Matmat = Callable[[np.ndarray], np.ndarray]  # V (n, k) -> H V (n, k)


@dataclass(frozen=True)
class Eigenvalue:
    """An eigenvalue estimate: ``value``, the matrix-vector products it took, and its residual bound."""

    value: float
    products: int
    residual: float


def lanczos(matmat: Matmat, n: int, *, iterations: int = 80, tol: float = 1e-8, seed: int = 0) -> tuple[np.ndarray, Eigenvalue]:
    """Lanczos with full reorthogonalisation: Ritz values of a symmetric ``n x n`` operator.

    Stops after ``iterations`` products, or earlier once the largest Ritz value's residual bound
    ``|beta_m s_m|`` is below ``tol * |theta|`` (or the Krylov space is exhausted).

    Returns:
        All Ritz values in ascending order, and the largest one as an :class:`Eigenvalue`.
    """
    rng = np.random.default_rng(seed)
    m = min(iterations, n)
    q = np.zeros((m + 1, n))
    q[0] = rng.standard_normal(n)
    q[0] /= np.linalg.norm(q[0])
    alpha, beta = np.zeros(m), np.zeros(m)
    for j in range(m):
        w = np.array(matmat(q[j][:, None]), np.float64)[:, 0]  # a writable copy
        alpha[j] = q[j] @ w
        for _ in range(2):  # twice is enough (Kahan): keeps the basis orthogonal in floating point
            w -= q[:j + 1].T @ (q[:j + 1] @ w)
        beta[j] = np.linalg.norm(w)
        theta, s = np.linalg.eigh(np.diag(alpha[:j + 1]) + np.diag(beta[:j], 1) + np.diag(beta[:j], -1))
        bound = abs(beta[j] * s[-1, -1])
        if bound <= tol * abs(theta[-1]) or beta[j] <= 1e-12 * max(abs(theta[-1]), 1e-300):
            break
        q[j + 1] = w / beta[j]
    return theta, Eigenvalue(float(theta[-1]), j + 1, float(bound))


def power_iteration(matmat: Matmat, n: int, *, iterations: int = 500, tol: float = 1e-8, seed: int = 0) -> Eigenvalue:
    """The eigenvalue of largest magnitude by power iteration (Rayleigh quotient).

    Note:
        This is sigma_max only when no negative eigenvalue is larger in magnitude; Lanczos
        (the default of :func:`largest_eigenvalue`) finds the algebraically largest one, and in
        fewer products.
    """
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    value, residual = 0.0, np.inf
    for i in range(1, iterations + 1):
        w = np.asarray(matmat(v[:, None]), np.float64)[:, 0]
        value = float(v @ w)
        residual = float(np.linalg.norm(w - value * v))
        norm = np.linalg.norm(w)
        if norm == 0 or residual <= tol * abs(value):
            break
        v = w / norm
    return Eigenvalue(value, i, residual)


def largest_eigenvalue(matmat: Matmat, n: int, method: str = "lanczos", **options: Any) -> Eigenvalue:
    """sigma_max of a symmetric operator by ``lanczos`` (default) or ``power`` iteration."""
    if method == "lanczos":
        return lanczos(matmat, n, **options)[1]
    if method == "power":
        return power_iteration(matmat, n, **options)
    raise unknown_choice("eigenvalue method", method, SPECTRUM_METHODS)


def dense_matrix(matmat: Matmat, n: int, *, block: int = 256) -> np.ndarray:
    """The ``n x n`` matrix of a symmetric operator from products with blocks of the identity, symmetrised."""
    h = np.empty((n, n))
    eye = np.eye(n)
    for start in range(0, n, block):
        h[:, start:start + block] = matmat(eye[:, start:start + block])
    return 0.5 * (h + h.T)  # products in floating point are symmetric only to rounding


def dense_spectrum(matmat: Matmat, n: int, *, block: int = 256, max_dim: int = 12000) -> np.ndarray:
    """Every eigenvalue, ascending, by dense eigendecomposition (Fig. 4a); refused above ``max_dim``."""
    if n > max_dim:
        raise UsageError(f"a dense Hessian of {n} parameters is too large (at most {max_dim}); "
                         "use the weights-only parameter set or a smaller net")
    return np.linalg.eigvalsh(dense_matrix(matmat, n, block=block))


# -- backend dispatch ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HessianOperator:
    """The Hessian of one loss w.r.t. one parameter set, as products with vectors.

    Attributes:
        n: the number of parameters (the operator is ``n x n``).
        keys: the parameters, in the order of the flattened vector.
        matmat: ``V (n, k) -> H V (n, k)`` as float64 numpy.
    """

    n: int
    keys: tuple[str, ...]
    matmat: Matmat


def flat_parameters(params: dict[str, np.ndarray],
                    keys: Sequence[str]) -> tuple[np.ndarray, tuple[tuple[int, ...], ...], dict[str, np.ndarray]]:
    """``(x0, shapes, fixed)``: the parameters ``keys`` as one flat vector, their shapes, and the others."""
    shapes = tuple(tuple(np.shape(params[k])) for k in keys)
    x0 = np.concatenate([np.ravel(params[k]) for k in keys])
    return x0, shapes, {k: v for k, v in params.items() if k not in keys}


def flat_loss(xp: Any, problem: Any, keys: tuple[str, ...], shapes: tuple[tuple[int, ...], ...], *,
              index: int | None, net: str, gate: str,
              split: Callable[[Any, list[int]], Sequence[Any]]) -> Callable[..., Any]:
    """The loss a Hessian is taken of, as a function of the flat parameter vector of :func:`flat_parameters`.

    ``split(x, indices)`` cuts ``x`` before each index (``jnp.split``, ``torch.tensor_split``): the
    framework's own split, since XLA rounds the derivative of a split and of slices differently.

    Returns:
        ``loss(x, fixed, points, mu, sigma, weights)``: ``weights[index] * L_index``, or
        sum_i weights_i L_i if ``index`` is None (the trainer's loss, gradpath.backends.losses.term_losses),
        with the parameters ``keys`` read from ``x`` and the others from ``fixed``.
    """
    cuts = np.cumsum([int(np.prod(s)) for s in shapes])[:-1].tolist()

    def loss(x, fixed, points, mu, sigma, w):
        p = dict(fixed)
        p.update({k: xp.reshape(part, shape) for k, part, shape in zip(keys, split(x, cuts), shapes)})
        losses = term_losses(xp, problem, p, points, mu, sigma, net=net, gate=gate)
        return w @ losses if index is None else w[index] * losses[index]

    return loss


def hessian_backends() -> list[str]:
    """The installed backends whose trainers offer Hessian products (a ``hessian_matmat`` hook)."""
    from gradpath.backends import backend_status, get_backend

    out = []
    for name in backend_status():
        try:
            if callable(getattr(get_backend(name), "hessian_matmat", None)):
                out.append(name)
        except UsageError:  # not installed, or a broken plugin: it offers nothing
            pass
    return out


def hessian_operator(backend: str, problem: Any, params: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray,
                     batch: Sequence[np.ndarray], weights: Sequence[float], *, term: str = "total",
                     parameter_set: str = "weights", net: str = "mlp", gate: str = "code",
                     dtype: str = "float64") -> HessianOperator:
    """The Hessian of a loss of ``problem`` at ``params`` on one batch, computed by ``backend``.

    Args:
        backend: a registered backend with the optional ``hessian_matmat`` hook (jax and torch
            have one: forward-over-reverse products).
        params: parameters by name (float64 numpy, e.g. from ``Trainer.export``).
        mu, sigma: the input normalisation.
        batch: one step's points, one ``(n_regions, batch, d)`` array per term.
        weights: the loss weights lambda; the ``total`` loss is sum_i lambda_i L_i and a term's
            loss is lambda_i L_i (the authors' Hessians include lambda, spec 9).
        term: ``total`` or a term name of ``problem``.
        parameter_set: ``weights`` or ``all`` (see :data:`PARAMETER_SETS`).
        net, gate: the network form (``Method.net``) and gate variant.
        dtype: ``float64`` (default, for accurate eigenvalues) or ``float32``.
    """
    from gradpath.backends import get_backend

    hook = getattr(get_backend(backend), "hessian_matmat", None)
    if not callable(hook):
        raise UsageError(f"backend {backend!r} offers no Hessian products; "
                         f"choose one of: {', '.join(hessian_backends())}")
    names = problem.term_names()
    if term != "total" and term not in names:
        raise unknown_choice("loss term", term, ("total", *names))
    keys = tuple(parameter_keys(params, parameter_set))
    index = None if term == "total" else names.index(term)
    n, matmat = hook(problem, params, mu, sigma, batch, np.asarray(weights, np.float64), keys,
                     index=index, net=net, gate=gate, dtype=dtype)
    return HessianOperator(n, keys, matmat)
