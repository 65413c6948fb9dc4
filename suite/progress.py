"""A progress bar over training steps: step, weighted loss, error and ETA, on a terminal only."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm


def weighted_loss(row: Mapping[str, Any]) -> float:
    """sum_i lambda_i L_i of a history row (its ``loss_<term>`` and ``weight_<term>`` columns)."""
    return sum(v * row.get(f"weight_{k[5:]}", 1.0) for k, v in row.items() if k.startswith("loss_"))


class Progress:
    """Shows training progress on stderr; silent when ``quiet`` or when stderr is not a terminal.

    Args:
        total: steps the run will take.
        metric: the history column shown as the error (the problem's primary metric).
        quiet: never show anything.
    """

    def __init__(self, total: int, metric: str, *, quiet: bool = False) -> None:
        self.metric = metric
        self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr,
                        disable=quiet or not sys.stderr.isatty())

    def update(self, row: Mapping[str, Any]) -> None:
        """Advance to ``row["step"]`` and show its loss and error."""
        self.bar.set_postfix_str(f"loss {weighted_loss(row):.3e}, {self.metric} {row[self.metric]:.3e}", refresh=False)
        self.bar.update(row["step"] - self.bar.n)

    def close(self) -> None:
        self.bar.close()
