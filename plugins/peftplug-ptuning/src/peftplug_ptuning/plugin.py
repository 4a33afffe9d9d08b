"""peftplug hook implementations for P-tuning (the input mechanism is peftplug-prompt's)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import TrainingArguments

from peftplug import MethodSpec, ParamGroup, hookimpl
from peftplug_prompt import (
    SoftPrompt,
    add_prompt,
    head_parameters,
    initial_virtual_tokens,
    prompt_layer,
    remove_prompt,
    virtual_token_tensors,
)
from peftplug_ptuning.config import PTuningConfig
from peftplug_ptuning.encoder import PromptEncoder


@hookimpl
def peftplug_register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(
        MethodSpec(
            "ptuning",
            PTuningConfig,
            "P-tuning: virtual input tokens from a prompt encoder",
            comparison={"learning_rate": 3e-2},
        )
    )


@hookimpl
def peftplug_prepare_model(
    model: nn.Module, config: object, adapter_name: str
) -> Callable[[], None] | None:
    if not isinstance(config, PTuningConfig):
        return None
    embedding = model.get_input_embeddings()
    initial = initial_virtual_tokens(model, getattr(embedding, "base_layer", embedding), config)
    prompt = SoftPrompt(initial) if config.folded else PromptEncoder(initial, config)
    add_prompt(model, adapter_name, prompt)
    if config.train_head:
        for parameter in head_parameters(model).values():
            parameter.requires_grad_(True)
    return lambda: remove_prompt(model, adapter_name)


@hookimpl
def peftplug_state_dict(
    model: nn.Module, config: object, adapter_name: str
) -> dict[str, torch.Tensor] | None:
    if not isinstance(config, PTuningConfig):
        return None
    return virtual_token_tensors(model, adapter_name, config.train_head)


@hookimpl
def peftplug_param_groups(
    model: nn.Module, config: object, adapter_name: str, args: TrainingArguments
) -> list[ParamGroup] | None:
    if not isinstance(config, PTuningConfig):
        return None
    embedding = prompt_layer(model).prompts[adapter_name].embedding
    # the learned input embeddings are soft tokens: no decay; the encoder's layers decay as usual
    return [ParamGroup([embedding], "ptuning_embedding", weight_decay=0.0)]
