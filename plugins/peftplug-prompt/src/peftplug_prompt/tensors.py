"""The live tensors a virtual-token adapter saves: its prompt module and, optionally, the head."""

from __future__ import annotations

import torch
from torch import nn

from peftplug.targets import task_head_names
from peftplug_prompt.mechanism import prompt_layer


def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The task head's parameters (classification models), by ``model.state_dict()`` name."""
    return {
        f"{head}.{name}": parameter
        for head in task_head_names(model)
        for name, parameter in model.get_submodule(head).named_parameters()
    }


def virtual_token_tensors(
    model: nn.Module, adapter_name: str, with_head: bool
) -> dict[str, torch.Tensor]:
    """Adapter ``adapter_name``'s prompt tensors (and the head's), keyed as in the state dict."""
    layer = prompt_layer(model)
    path = next(name for name, module in model.named_modules() if module is layer)
    prompt = layer.prompts[adapter_name]
    tensors = {f"{path}.prompts.{adapter_name}.{name}": p for name, p in prompt.named_parameters()}
    if with_head:
        tensors.update(head_parameters(model))
    return tensors
