"""peftplug hook implementations for prefix tuning."""

from __future__ import annotations

from collections.abc import Callable

import torch
from peftplug_prompt import head_parameters
from torch import nn
from transformers import TrainingArguments

from peftplug import MethodSpec, ParamGroup, hookimpl
from peftplug_prefix.config import PrefixConfig
from peftplug_prefix.init import initial_prefix
from peftplug_prefix.layer import PrefixEncoder, PrefixKeyValues
from peftplug_prefix.mechanism import add_prefix, prefix_store, prepare_attention, remove_prefix
from peftplug_prefix.tensors import prefix_tensors


@hookimpl
def peftplug_register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(
        MethodSpec(
            "prefix",
            PrefixConfig,
            "Prefix tuning: learned keys and values in every layer",
            comparison={"learning_rate": 1e-2, "options": {"projection": False}},
        )
    )


@hookimpl
def peftplug_prepare_model(
    model: nn.Module, config: object, adapter_name: str
) -> Callable[[], None] | None:
    if not isinstance(config, PrefixConfig):
        return None
    try:
        prepare_attention(model)
        embedding = model.get_input_embeddings()
        start = initial_prefix(model, getattr(embedding, "base_layer", embedding), config)
        if config.projection and not config.folded:
            hidden = embedding.weight.shape[1]
            width = config.encoder_hidden_size
            prefix = PrefixEncoder(start.keys, start.values, hidden, width)
        else:
            prefix = PrefixKeyValues(start.keys, start.values)
        add_prefix(model, adapter_name, prefix.to(start.keys.device), start.modules)
    except BaseException:
        remove_prefix(model, adapter_name)
        raise
    if config.train_head:
        for parameter in head_parameters(model).values():
            parameter.requires_grad_(True)
    return lambda: remove_prefix(model, adapter_name)


@hookimpl
def peftplug_state_dict(
    model: nn.Module, config: object, adapter_name: str
) -> dict[str, torch.Tensor] | None:
    if not isinstance(config, PrefixConfig):
        return None
    return prefix_tensors(model, adapter_name, config.train_head)


@hookimpl
def peftplug_param_groups(
    model: nn.Module, config: object, adapter_name: str, args: TrainingArguments
) -> list[ParamGroup] | None:
    if not isinstance(config, PrefixConfig):
        return None
    # weight decay would pull the prefixes towards zero, away from the real keys they start at
    prefix = list(prefix_store(model).adapter_parameters(adapter_name))
    return [ParamGroup(prefix, "prefix", weight_decay=0.0)]
