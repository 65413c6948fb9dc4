"""Adam with the paper's continuously decaying learning rate, written once over ``xp``.

Both backends run exactly this update, so the same seed gives the same trajectory in both.

Note:
    TensorFlow 1's Adam (the authors') adds epsilon to sqrt(v) after folding the bias correction
    into the step size ("epsilon-hat", ``form="tf1"``); PyTorch and optax add it to sqrt(v_hat)
    (``form="standard"``, the default). The difference is negligible at eps = 1e-8 (spec 2.4).
"""

from __future__ import annotations

from typing import Any

ADAM_FORMS = ("standard", "tf1")


def learning_rate(count: Any, lr: float, decay_rate: float, decay_steps: int) -> Any:
    """lr * decay_rate ** (count / decay_steps): TF1 ``exponential_decay`` with staircase=False."""
    return lr * decay_rate ** (count / decay_steps)


def adam_update(params: dict, grads: dict, m: dict, v: dict, count: Any, lr: Any, *,
                b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, form: str = "standard"):
    """One Adam step for update number ``count`` (0-based). Returns (params, m, v).

    ``count`` may be a framework scalar; the arithmetic uses only operators, so any array type works.
    """
    t = count + 1
    c1, c2 = 1 - b1**t, 1 - b2**t
    new_p, new_m, new_v = {}, {}, {}
    for k, g in grads.items():
        new_m[k] = b1 * m[k] + (1 - b1) * g
        new_v[k] = b2 * v[k] + (1 - b2) * (g * g)
        if form == "tf1":
            new_p[k] = params[k] - (lr * c2**0.5 / c1) * new_m[k] / (new_v[k] ** 0.5 + eps)
        else:
            new_p[k] = params[k] - lr * (new_m[k] / c1) / ((new_v[k] / c2) ** 0.5 + eps)
    return new_p, new_m, new_v
