"""How many parameters train: the report HF PEFT users know from print_trainable_parameters."""

from __future__ import annotations

import dataclasses

from torch import nn


@dataclasses.dataclass(frozen=True)
class TrainableReport:
    """Trainable and total parameter counts (each shared tensor counted once)."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        """Trainable share of all parameters, in percent."""
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (
            f"trainable params: {self.trainable:,} || all params: {self.total:,} "
            f"|| trainable%: {self.percent:.4f}"
        )


def trainable_parameters(model: nn.Module) -> TrainableReport:
    """Count the parameters that train and all parameters of ``model``."""
    trainable = total = 0
    for parameter in model.parameters():  # parameters() yields each shared tensor once
        count = parameter.numel()
        total += count
        if parameter.requires_grad:
            trainable += count
    return TrainableReport(trainable, total)
