"""A progress bar over training steps: step, weighted loss, error and ETA, on a terminal only."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from tqdm import tqdm


def weighted_loss(row: Mapping[str, Any]) -> float:
    """sum_i lambda_i L_i of a history row (its ``loss_<term>`` and ``weight_<term>`` columns)."""
    return sum(v * row.get(f"weight_{k[5:]}", 1.0) for k, v in row.items() if k.startswith("loss_"))


class Progress:
    """Shows training progress on stderr; silent when ``quiet`` or when stderr is not a terminal.

    The rate, and so the ETA, counts from the first history row on: before it come the compile
    (seconds to minutes) and the first chunk, which would make the first estimates far too long.

    Args:
        total: steps the run will take.
        metric: the history column shown as the error (the problem's primary metric).
        quiet: never show anything.
        file: where to draw (default stderr, only when it is a terminal); given, the bar is always drawn.
    """

    def __init__(self, total: int, metric: str, *, quiet: bool = False, file: TextIO | None = None) -> None:
        self.metric = metric
        self.started = False
        shown = not quiet and (file is not None or sys.stderr.isatty())
        self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, leave=False, file=file or sys.stderr,
                        disable=not shown)
        self.bar.set_postfix_str("compiling and the first steps", refresh=False)

    def update(self, row: Mapping[str, Any]) -> None:
        """Advance to ``row["step"]`` and show its loss and error."""
        self.bar.set_postfix_str(f"loss {weighted_loss(row):.3e}, {self.metric} {row[self.metric]:.3e}", refresh=False)
        if not self.started:  # the clock starts here: steps before this row are not in the rate
            self.started = True
            self.bar.reset()
            self.bar.initial = self.bar.n = self.bar.last_print_n = row["step"]
            self.bar.refresh()
            return
        self.bar.update(row["step"] - self.bar.n)

    def close(self) -> None:
        self.bar.close()
