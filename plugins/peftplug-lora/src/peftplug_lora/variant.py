"""``LoraVariant``: the public way to change what one LoRA adapter computes (DoRA is one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from peftplug_lora.config import LoraConfig
    from peftplug_lora.layer import LoraLinear


class LoraVariant(nn.Module):
    """How one adapter departs from plain LoRA; subclass it to write a LoRA variant.

    ``LoraLinear.add_adapter`` builds one per adapter, after that adapter's A and B, when
    ``config.variant()`` returns a subclass, and keeps it as ``layer.lora_variant[name]``.
    The parameters it registers train, save, move and switch with the adapter's A and B.
    The layer is passed to each call, never stored (it owns the variant).
    """

    def __init__(self, layer: LoraLinear, name: str, config: LoraConfig) -> None:
        super().__init__()
        self.adapter_name = name

    def forward(self, layer: LoraLinear, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """The layer's output for ``x``, given the base layer's output ``result``."""
        raise NotImplementedError

    def merge(self, layer: LoraLinear, weight: torch.Tensor) -> torch.Tensor:
        """The dense (out, in) base ``weight`` with this adapter folded in (default: additive)."""
        return weight + layer.delta_weight(self.adapter_name).to(weight.dtype)

    def unmerge(self, layer: LoraLinear, weight: torch.Tensor) -> torch.Tensor:
        """The weight ``merge`` started from, given the merged ``weight``."""
        return weight - layer.delta_weight(self.adapter_name).to(weight.dtype)
