"""The LoRA layer: one class for every linear base (float, Conv1D, 4-bit)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftplug import AdapterLayer, get_base_weight, set_base_weight
from peftplug_lora.config import LoraConfig


def linear_features(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear-like base layer."""
    if isinstance(layer, Conv1D):
        return layer.weight.shape[0], layer.nf
    return layer.in_features, layer.out_features


def _adapter_dtype(layer: nn.Module) -> torch.dtype:
    """Adapters train in fp32 unless the base is fp32/fp64 already (as HF PEFT does)."""
    weight = getattr(layer, "weight", None)
    if weight is not None and weight.dtype in (torch.float32, torch.float64):
        return weight.dtype
    return torch.float32


class LoraLinear(AdapterLayer):
    """``base(x) + scaling * B(A(dropout(x)))`` for the active adapter, unless it has a variant.

    An adapter whose config names a ``LoraVariant`` (DoRA: ``use_dora``) has it in
    ``lora_variant[name]``, which then computes the output and merges.
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = linear_features(base_layer)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.lora_variant = nn.ModuleDict()
        self.scaling: dict[str, float] = {}

    @property
    def adapter_names(self) -> list[str]:
        return list(self.lora_A.keys())

    def add_adapter(self, name: str, config: LoraConfig) -> None:
        """Create adapter ``name``: A Kaiming-uniform, B zero, so the output starts unchanged."""
        weight = get_base_weight(self.base_layer)
        options = {"device": weight.device, "dtype": _adapter_dtype(self.base_layer)}
        self.lora_A[name] = nn.Linear(self.in_features, config.r, bias=False, **options)
        self.lora_B[name] = nn.Linear(config.r, self.out_features, bias=False, **options)
        nn.init.kaiming_uniform_(self.lora_A[name].weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B[name].weight)
        if config.dropout > 0:
            self.lora_dropout[name] = nn.Dropout(config.dropout)
        self.scaling[name] = config.scaling
        variant = config.variant()
        if variant is not None:
            self.lora_variant[name] = variant(self, name, config)

    def adapter_parameters(self, name: str) -> Iterator[nn.Parameter]:
        yield self.lora_A[name].weight
        yield self.lora_B[name].weight
        if name in self.lora_variant:
            yield from self.lora_variant[name].parameters()

    def delete_adapter(self, name: str) -> None:
        for container in (self.lora_A, self.lora_B, self.lora_dropout, self.lora_variant):
            if name in container:
                del container[name]
        self.scaling.pop(name, None)
        if self.active_adapter == name:
            self.active_adapter = None

    def delta_weight(self, name: str) -> torch.Tensor:
        """``scaling * B @ A`` as an (out, in) matrix."""
        return (self.lora_B[name].weight @ self.lora_A[name].weight) * self.scaling[name]

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.adapter_active():
            return result
        name = self.active_adapter
        if name in self.lora_variant:
            return self.lora_variant[name](self, x, result)
        lora_a = self.lora_A[name].weight
        hidden = x.to(lora_a.dtype)
        if name in self.lora_dropout:
            hidden = self.lora_dropout[name](hidden)
        update = nn.functional.linear(
            nn.functional.linear(hidden, lora_a), self.lora_B[name].weight
        )
        # In place: the base output is not needed by its own backward, so this saves a copy.
        return result.add_(update.to(result.dtype), alpha=self.scaling[name])

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the active adapter into the base weight; a variant folds itself in."""
        name = self.active_adapter
        if name not in self.lora_variant or name in self.merged_adapters:
            super().merge()
            return
        weight = get_base_weight(self.base_layer)
        merged = self.lora_variant[name].merge(self, weight)
        set_base_weight(self.base_layer, merged.to(weight.dtype))
        self.merged_adapters.append(name)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the merged adapters back out of the base weight; a variant takes itself out."""
        # Only the active adapter merges, and switching needs an unmerge: at most one is merged.
        while self.merged_adapters and self.merged_adapters[-1] in self.lora_variant:
            name = self.merged_adapters.pop()
            weight = get_base_weight(self.base_layer)
            restored = self.lora_variant[name].unmerge(self, weight)
            set_base_weight(self.base_layer, restored.to(weight.dtype))
        super().unmerge()

    def extra_repr(self) -> str:
        ranks = {name: a.out_features for name, a in self.lora_A.items()}
        return f"in={self.in_features}, out={self.out_features}, ranks={ranks}"
