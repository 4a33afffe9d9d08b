"""DoRA (Liu et al. 2024): LoRA's direction with a trained magnitude per output row."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from peftplug import get_base_weight
from peftplug_lora.variant import LoraVariant

if TYPE_CHECKING:
    from peftplug_lora.config import LoraConfig
    from peftplug_lora.layer import LoraLinear


class DoraVariant(LoraVariant):
    """``magnitude * (W + s B A) / ||W + s B A||`` per output row: HF PEFT's ``use_dora``.

    The row norm gets no gradient (DoRA section 4.3); ``magnitude`` starts at the row norms of
    the base weight, so the layer starts unchanged. The bias is not rescaled.
    """

    def __init__(self, layer: LoraLinear, name: str, config: LoraConfig) -> None:
        super().__init__(layer, name, config)
        self.magnitude = nn.Parameter(self._norm(layer, get_base_weight(layer.base_layer)))
        self.merged_scale: torch.Tensor | None = None

    def _norm(self, layer: LoraLinear, weight: torch.Tensor) -> torch.Tensor:
        """Row norms of ``weight + s B A``, outside the autograd graph."""
        lora = layer.delta_weight(self.adapter_name).detach()
        return torch.linalg.norm(weight.to(lora.dtype) + lora, dim=1)

    def forward(self, layer: LoraLinear, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        name = self.adapter_name
        lora_a, lora_b = layer.lora_A[name].weight, layer.lora_B[name].weight
        x = x.to(lora_a.dtype)
        weight = get_base_weight(layer.base_layer).to(x.dtype)
        scale = self.magnitude / self._norm(layer, weight)
        if layer.training and name in layer.lora_dropout:
            # As PEFT: with dropout, the rescaled base output is recomputed on the dropped input.
            x = layer.lora_dropout[name](x)
            base = nn.functional.linear(x, weight)
        else:
            bias = getattr(layer.base_layer, "bias", None)
            base = result if bias is None else result - bias
        lora = nn.functional.linear(nn.functional.linear(x, lora_a), lora_b)
        update = (scale - 1) * base + scale * lora * layer.scaling[name]
        return (result + update).to(result.dtype)

    def merge(self, layer: LoraLinear, weight: torch.Tensor) -> torch.Tensor:
        # In float64, so that a merge and unmerge round each weight twice, as plain LoRA's do.
        adapted = weight.double() + layer.delta_weight(self.adapter_name).double()
        self.merged_scale = self.magnitude.double().unsqueeze(1) / adapted.norm(dim=1, keepdim=True)
        return adapted * self.merged_scale

    def unmerge(self, layer: LoraLinear, weight: torch.Tensor) -> torch.Tensor:
        # The merged rows' norm is the magnitude, not the unmerged one: reuse the merge's scale.
        adapted = weight.double() / self.merged_scale
        self.merged_scale = None
        return adapted - layer.delta_weight(self.adapter_name).double()
