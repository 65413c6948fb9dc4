"""What a run is: a resolved problem, backend and settings, and the key its record is found by."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from gradpath.backends.settings import TrainSettings


@dataclass(frozen=True)
class RunSpec:
    """One resolved run of a campaign.

    Attributes:
        problem: registered problem name.  parameters: every problem parameter (resolved).
        backend: backend name.  settings: the TrainSettings keyword arguments given.
        config: the run record's config (problem, parameters, backend, resolved settings).
        key: hash of ``config``.  name: the run directory's name (``<problem>-<method>-...-<key>``).
    """

    problem: str
    parameters: dict[str, Any]
    backend: str
    settings: dict[str, Any]
    config: dict[str, Any]
    key: str
    name: str

    def train_settings(self) -> TrainSettings:
        return TrainSettings(**self.settings)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))
