"""peftplug hook implementations for prompt tuning."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import TrainingArguments

from peftplug import MethodSpec, ParamGroup, hookimpl
from peftplug_prompt.config import PromptConfig
from peftplug_prompt.init import initial_virtual_tokens
from peftplug_prompt.layer import SoftPrompt
from peftplug_prompt.mechanism import add_prompt, prompt_layer, remove_prompt
from peftplug_prompt.tensors import head_parameters, virtual_token_tensors


@hookimpl
def peftplug_register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(
        MethodSpec(
            "prompt",
            PromptConfig,
            "Prompt tuning: trainable virtual input tokens",
            comparison={"learning_rate": 3e-2},
        )
    )


@hookimpl
def peftplug_prepare_model(
    model: nn.Module, config: object, adapter_name: str
) -> Callable[[], None] | None:
    if not isinstance(config, PromptConfig):
        return None
    embedding = model.get_input_embeddings()
    base = getattr(embedding, "base_layer", embedding)
    add_prompt(model, adapter_name, SoftPrompt(initial_virtual_tokens(model, base, config)))
    if config.train_head:
        for parameter in head_parameters(model).values():
            parameter.requires_grad_(True)
    return lambda: remove_prompt(model, adapter_name)


@hookimpl
def peftplug_state_dict(
    model: nn.Module, config: object, adapter_name: str
) -> dict[str, torch.Tensor] | None:
    if not isinstance(config, PromptConfig):
        return None
    return virtual_token_tensors(model, adapter_name, config.train_head)


@hookimpl
def peftplug_param_groups(
    model: nn.Module, config: object, adapter_name: str, args: TrainingArguments
) -> list[ParamGroup] | None:
    if not isinstance(config, PromptConfig):
        return None
    layer = prompt_layer(model)
    # weight decay would pull the virtual tokens towards zero, away from real token embeddings
    prompt = list(layer.adapter_parameters(adapter_name))
    return [ParamGroup(prompt, "soft_prompt", weight_decay=0.0)]
