"""Optimizer parameter groups gathered from the plugins."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn
from transformers import TrainingArguments
from transformers.trainer_pt_utils import get_parameter_names

from peftplug.contracts import ParamGroup
from peftplug.errors import PeftplugError
from peftplug.plugins import get_host
from peftplug.state import peft_state

NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def build_param_groups(model: nn.Module, args: TrainingArguments) -> list[dict[str, Any]]:
    """The ``torch.optim`` parameter groups for ``model``, as the Trainer's optimizer gets them.

    First each applied method's ``ParamGroup``s (from ``peftplug_param_groups``), then the
    trainable parameters no method claimed, split as the stock Trainer does: weight decay
    except on biases and norms. Empty groups are left out; pass the list to any optimizer.
    """
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    claimed: dict[int, str] = {}
    groups: list[ParamGroup] = []
    state = peft_state(model)
    for applied in state.methods if state else []:
        method_groups = get_host().hook.peftplug_param_groups(
            model=model, config=applied.config, adapter_name=applied.adapter_name, args=args
        )
        for group in method_groups or []:
            params = [p for p in group.params if id(p) in trainable]
            for parameter in params:
                if id(parameter) in claimed:
                    raise PeftplugError(
                        f"parameter {trainable[id(parameter)]!r} is in two optimizer groups "
                        f"({claimed[id(parameter)]!r} and {group.name!r}): a plugin bug"
                    )
                claimed[id(parameter)] = group.name
            groups.append(dataclasses.replace(group, params=params))
    decay_names = set(get_parameter_names(model, [nn.LayerNorm], NO_DECAY_PATTERNS))
    rest = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in claimed]
    groups.append(ParamGroup([p for n, p in rest if n in decay_names], "decay"))
    groups.append(ParamGroup([p for n, p in rest if n not in decay_names], "no_decay", None, 0.0))
    return [group.to_torch(args) for group in groups if group.params]
