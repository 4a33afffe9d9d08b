"""LoRA's options."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from peftplug import ConfigError, TargetedConfig
from peftplug_lora.dora import DoraVariant
from peftplug_lora.variant import LoraVariant


@dataclasses.dataclass
class LoraConfig(TargetedConfig):
    """Low-rank adaptation: ``W x + (alpha / r) * B A x`` on each target layer.

    ``modules_to_save``: modules trained in full and saved with the adapter (each adapter
    trains its own copy); ``"auto"`` picks the task head of classification models.
    ``loraplus_lr_ratio``: LoRA+ — B matrices learn this many times faster than A.
    ``bias``: also train no biases, all biases, or the biases of the wrapped layers.
    ``use_dora``: DoRA — a trained magnitude per output row times LoRA's direction.
    """

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    use_rslora: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] | Literal["auto"] = "auto"
    loraplus_lr_ratio: float | None = None
    use_dora: bool = False

    def validate(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora option 'r' must be a positive rank, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora option 'alpha' must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora option 'dropout' must be in [0, 1), got {self.dropout}")
        if self.loraplus_lr_ratio is not None and self.loraplus_lr_ratio <= 0:
            raise ConfigError(
                f"lora option 'loraplus_lr_ratio' must be positive (16 is typical), "
                f"got {self.loraplus_lr_ratio}"
            )

    def variant(self) -> type[LoraVariant] | None:
        """The variant each adapter gets (None: plain LoRA); a config subclass may override it."""
        return DoraVariant if self.use_dora else None

    @property
    def scaling(self) -> float:
        """The factor on ``B A x``: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)
