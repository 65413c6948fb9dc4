"""Training points drawn with numpy from the seed, identically for every backend."""

from __future__ import annotations

import numpy as np

from problems.core import Problem


def seed_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators for the initial weights, the input normalisation and the batches."""
    init, norm, data = np.random.SeedSequence(seed).spawn(3)
    return {"init": np.random.default_rng(init), "normalisation": np.random.default_rng(norm),
            "batches": np.random.default_rng(data)}


def draw_batches(problem: Problem, rng: np.random.Generator, steps: int, batch_size: int,
                 dtype: str) -> list[np.ndarray]:
    """Fresh points for ``steps`` steps: one ``(steps, n_regions, batch_size, d)`` array per term.

    Each step consumes one row of uniforms, split over the terms and regions in the problem's
    order. numpy fills ``rng.random((steps, n))`` row by row, so the batches of step s do not
    depend on how many steps are drawn at a time (the log interval), only on the seed.
    """
    terms = problem.terms()
    dim = len(problem.inputs)
    per_step = sum(len(t.regions) for t in terms) * batch_size * dim
    u = rng.random((steps, per_step))
    out, offset = [], 0
    for term in terms:
        regions = []
        for region in term.regions:
            block = u[:, offset:offset + batch_size * dim].reshape(steps, batch_size, dim)
            regions.append(region.from_unit(block))
            offset += batch_size * dim
        out.append(np.stack(regions, axis=1).astype(dtype))
    return out
