"""``QLoraLinear``: peftplug-lora's layer, with one fused op when the base is 4-bit."""

from __future__ import annotations

import torch
from peftplug_lora import LoraLinear

from peftplug.quant import NF4Linear


class QLoraLinear(LoraLinear):
    """LoRA over an ``NF4Linear``: ``nf4_lora_linear`` computes base and update in one op.

    Everything else (adapters, variants such as DoRA, merging through the base-weight hooks,
    saving) is LoRA's.
    """

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        base = self.base_layer
        fused = isinstance(base, NF4Linear) and self.adapter_active() and not (args or kwargs)
        if not fused or self.active_adapter in self.lora_variant:
            return super().forward(x, *args, **kwargs)
        name = self.active_adapter
        lora_a, lora_b = self.lora_A[name].weight, self.lora_B[name].weight
        lora_x = x.to(lora_a.dtype)
        if name in self.lora_dropout:
            lora_x = self.lora_dropout[name](lora_x)
        return base.forward_with_lora(x, lora_x, lora_a, lora_b, self.scaling[name])
