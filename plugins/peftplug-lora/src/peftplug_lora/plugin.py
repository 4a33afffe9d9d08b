"""peftplug hook implementations for LoRA."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from transformers import TrainingArguments

from peftplug import MethodSpec, ParamGroup, PeftEquivalent, hookimpl
from peftplug.saved_modules import resolve_modules_to_save
from peftplug.targets import LINEAR_TYPES
from peftplug_lora.config import LoraConfig
from peftplug_lora.layer import LoraLinear
from peftplug_lora.peft_equivalent import options_from_peft, peft_equivalent, peft_training_config


@hookimpl
def peftplug_register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(
        MethodSpec(
            "lora",
            LoraConfig,
            "Low-rank adaptation of linear layers (LoRA)",
            comparison={"learning_rate": 2e-3, "options": {"r": 8, "alpha": 16}},
            starts_at_base=True,
            peft_type="LORA",
        )
    )


@hookimpl
def peftplug_prepare_model(model: nn.Module, config: object, adapter_name: str) -> None:
    if not isinstance(config, LoraConfig):
        return None
    if config.bias == "all":
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.requires_grad_(True)
    return None


@hookimpl
def peftplug_replace_module(
    module: nn.Module, name: str, config: object, adapter_name: str
) -> nn.Module | None:
    if not isinstance(config, LoraConfig):
        return None
    if isinstance(module, LoraLinear):
        layer = module
    elif isinstance(module, LINEAR_TYPES):
        layer = LoraLinear(module)
    else:
        return None
    layer.add_adapter(adapter_name, config)
    if config.bias == "lora_only" and getattr(layer.base_layer, "bias", None) is not None:
        layer.base_layer.bias.requires_grad_(True)
    return layer


@hookimpl
def peftplug_modules_to_save(
    model: nn.Module, config: object, adapter_name: str
) -> list[str] | None:
    if not isinstance(config, LoraConfig):
        return None
    return resolve_modules_to_save(model, config.modules_to_save)


@hookimpl
def peftplug_state_dict(
    model: nn.Module, config: object, adapter_name: str
) -> dict[str, torch.Tensor] | None:
    if not isinstance(config, LoraConfig):
        return None
    tensors: dict[str, torch.Tensor] = {}
    for path, module in model.named_modules():
        if isinstance(module, LoraLinear) and adapter_name in module.lora_A:
            tensors[f"{path}.lora_A.{adapter_name}.weight"] = module.lora_A[adapter_name].weight
            tensors[f"{path}.lora_B.{adapter_name}.weight"] = module.lora_B[adapter_name].weight
            if adapter_name in module.lora_variant:
                for key, tensor in module.lora_variant[adapter_name].named_parameters():
                    tensors[f"{path}.lora_variant.{adapter_name}.{key}"] = tensor
            if config.bias == "lora_only" and getattr(module.base_layer, "bias", None) is not None:
                tensors[f"{path}.base_layer.bias"] = module.base_layer.bias
    if config.bias == "all":
        tensors.update((n, p) for n, p in model.named_parameters() if n.endswith("bias"))
    return tensors


@hookimpl
def peftplug_peft_equivalent(
    model: nn.Module, config: object, adapter_name: str
) -> PeftEquivalent | None:
    if not isinstance(config, LoraConfig):
        return None
    return peft_equivalent(model, config, adapter_name)


@hookimpl
def peftplug_peft_training_config(model: nn.Module, config: object) -> dict[str, Any] | None:
    if not isinstance(config, LoraConfig):
        return None
    return peft_training_config(model, config)


@hookimpl
def peftplug_options_from_peft(
    peft_config: Mapping[str, Any],
) -> tuple[str, dict[str, Any]] | None:
    return options_from_peft(peft_config)


@hookimpl
def peftplug_param_groups(
    model: nn.Module, config: object, adapter_name: str, args: TrainingArguments
) -> list[ParamGroup] | None:
    if not isinstance(config, LoraConfig) or config.loraplus_lr_ratio is None:
        return None
    layers = [m for m in model.modules() if isinstance(m, LoraLinear) and adapter_name in m.lora_B]
    return [
        ParamGroup([layer.lora_A[adapter_name].weight for layer in layers], "lora_A"),
        ParamGroup(
            [layer.lora_B[adapter_name].weight for layer in layers],
            "lora_B",
            lr=args.learning_rate * config.loraplus_lr_ratio,
        ),
    ]
