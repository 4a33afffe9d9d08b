"""LoRA's HF PEFT equivalent: ``LoraConfig`` fields and the A, B (and DoRA magnitude) tensors."""

from __future__ import annotations

import torch
from torch import nn

from peftplug import PeftEquivalent
from peftplug_lora.config import LoraConfig
from peftplug_lora.dora import DoraVariant
from peftplug_lora.layer import LoraLinear

PEFT_MODEL_PREFIX = "base_model.model."


def peft_equivalent(
    model: nn.Module, config: LoraConfig, adapter_name: str
) -> PeftEquivalent | None:
    """PEFT's LoRA with the same settings on exactly the layers this adapter wraps.

    A variant other than DoRA has no PEFT equivalent (``None``).
    """
    layers = {
        path: layer
        for path, layer in model.named_modules()
        if isinstance(layer, LoraLinear) and adapter_name in layer.lora_A
    }
    variants = {
        type(layer.lora_variant[adapter_name])
        for layer in layers.values()
        if adapter_name in layer.lora_variant
    }
    if variants - {DoraVariant}:
        return None
    tensors: dict[str, torch.Tensor] = {}
    for path, layer in layers.items():
        prefix = f"{PEFT_MODEL_PREFIX}{path}"
        tensors[f"{prefix}.lora_A.default.weight"] = layer.lora_A[adapter_name].weight
        tensors[f"{prefix}.lora_B.default.weight"] = layer.lora_B[adapter_name].weight
        if adapter_name in layer.lora_variant:
            magnitude = layer.lora_variant[adapter_name].magnitude
            tensors[f"{prefix}.lora_magnitude_vector.default.weight"] = magnitude
    if config.bias != "none":
        tensors.update(
            (PEFT_MODEL_PREFIX + name, parameter)
            for name, parameter in model.named_parameters()
            if name.endswith("bias") and parameter.requires_grad and ".modules_to_save." not in name
        )
    fields = {
        "peft_type": "LORA",
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "use_rslora": config.use_rslora,
        "use_dora": config.use_dora,
        "bias": config.bias,
        "target_modules": sorted(layers),
    }
    return PeftEquivalent(fields, tensors)
