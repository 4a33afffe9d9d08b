"""LoRA's HF PEFT equivalent: ``LoraConfig`` fields and the A, B (and DoRA magnitude) tensors.

Both ways: ``peft_equivalent`` for ``export_peft``, ``options_from_peft`` for ``import_peft``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from peftplug import ConfigError, PeftEquivalent
from peftplug.import_peft import PEFT_METADATA_FIELDS, refuse_peft_fields
from peftplug.saved_modules import resolve_modules_to_save
from peftplug.targets import find_targets
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
        **_peft_fields(config),
        "target_modules": sorted(layers),
    }
    return PeftEquivalent(fields, tensors)


# PEFT's LoraConfig fields that options_from_peft reads
READ_FIELDS = {
    "r",
    "lora_alpha",
    "lora_dropout",
    "use_rslora",
    "use_dora",
    "bias",
    "target_modules",
    "exclude_modules",
    "modules_to_save",
    "init_lora_weights",
}
# fields without effect on a loaded adapter: metadata, initialisation (the file replaces it),
# the layout PEFT picks per layer type, and settings of features refused when set
IGNORED_FIELDS = PEFT_METADATA_FIELDS | {
    "fan_in_fan_out",
    "layers_pattern",
    "loftq_config",
    "eva_config",
    "corda_config",
    "lora_ga_config",
    "qalora_group_size",
    "megatron_core",
}
# initialisations that leave the base weights as they are (PiSSA, OLoRA, CorDA, LoftQ change them)
BASE_KEEPING_INITS = (True, False, "gaussian", "eva", "orthogonal")


def options_from_peft(peft_config: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``lora`` and its options for PEFT's ``LoraConfig``, or ``None`` for another ``peft_type``.

    A PEFT feature LoRA does not have (``rank_pattern``, ``layers_to_transform``, ...) is a
    ``ConfigError`` naming the field.
    """
    if peft_config.get("peft_type") != "LORA":
        return None
    init = peft_config.get("init_lora_weights", True)
    if init not in BASE_KEEPING_INITS:
        raise ConfigError(
            f"the HF PEFT adapter sets init_lora_weights={init!r}: its A and B belong to a base "
            "whose weights that initialisation changed, so they cannot be imported over the "
            "original base; convert it to plain LoRA with PEFT first (save_pretrained(..., "
            "path_initial_model_for_weight_conversion=...))"
        )
    refuse_peft_fields(peft_config, READ_FIELDS | IGNORED_FIELDS, "lora")
    options = {
        "r": peft_config.get("r", 8),
        "alpha": peft_config.get("lora_alpha", 8),
        "dropout": peft_config.get("lora_dropout", 0.0),
        "use_rslora": peft_config.get("use_rslora", False),
        "use_dora": peft_config.get("use_dora", False),
        "bias": peft_config.get("bias", "none"),
        "target_modules": peft_config.get("target_modules"),
        "exclude_modules": peft_config.get("exclude_modules"),
        "modules_to_save": peft_config["modules_to_save"],
    }
    return "lora", options


def peft_training_config(model: nn.Module, config: LoraConfig) -> dict[str, Any]:
    """PEFT's LoRA fields training these options on the plain ``model``: the same layers (as
    full paths), the same heads saved in full."""
    return {
        **_peft_fields(config),
        "target_modules": find_targets(model, config),
        "modules_to_save": resolve_modules_to_save(model, config.modules_to_save) or None,
    }


def _peft_fields(config: LoraConfig) -> dict[str, Any]:
    """The LoRA settings under PEFT's ``LoraConfig`` field names."""
    return {
        "peft_type": "LORA",
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "use_rslora": config.use_rslora,
        "use_dora": config.use_dora,
        "bias": config.bias,
    }
