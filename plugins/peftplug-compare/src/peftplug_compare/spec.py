"""One spec per table row (JSON-ready): what a comparison runs."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from peftplug.workload.options import Workload

RowKind = Literal["untrained", "in-context", "method", "peft"]


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """One row of the table: the untrained model, in-context examples, a method, PEFT's method."""

    label: str
    kind: RowKind
    workload: Workload
    method: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    learning_rate: float | None = None
    adapter_dir: str | None = None
    search_learning_rate: bool = False  # search around learning_rate (lr_search) before training

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        values = dataclasses.asdict(self)
        values["workload"] = self.workload.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RowSpec:
        """Inverse of ``to_dict``."""
        return cls(**{**values, "workload": Workload.from_dict(values["workload"])})
