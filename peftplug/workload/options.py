"""The workload of ``peftplug train`` and of every comparison row: task, model, data, budget."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

Task = Literal["classification", "causal-lm"]
TASKS: tuple[str, ...] = ("classification", "causal-lm")

# Held-out examples when the user gives no --eval-size: BASELINE.md's QA split, and enough
# reviews to read accuracy to about +-2 points while evaluating every row in seconds.
DEFAULT_EVAL_SIZE: dict[str, int] = {"classification": 500, "causal-lm": 200}


@dataclasses.dataclass(frozen=True)
class Workload:
    """The task, model, data and budget every row shares.

    ``model``/``data`` of ``None`` mean the shipped model and data set of the task.
    ``eval_size`` of ``None`` takes ``DEFAULT_EVAL_SIZE`` (a fifth of a user's data set, at most
    that many).
    """

    task: Task = "classification"
    model: str | None = None
    data: str | None = None
    steps: int = 80
    seed: int = 0
    batch_size: int = 16
    max_length: int = 64
    eval_size: int | None = None
    latency_repeats: int = 5
    warmup_ratio: float = 0.1
    shots: int = 4  # causal LM: training pairs in the prompt of the in-context row (0: no row)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Workload:
        """Inverse of ``to_dict``."""
        return cls(**values)
