"""The live tensors a prefix adapter saves, and its optimizer group."""

from __future__ import annotations

import torch
from peftplug_prompt import head_parameters
from torch import nn

from peftplug_prefix.mechanism import STORE_ATTRIBUTE, prefix_store


def prefix_tensors(model: nn.Module, adapter_name: str, with_head: bool) -> dict[str, torch.Tensor]:
    """Adapter ``adapter_name``'s prefix tensors (and the head's), keyed as in the state dict."""
    prefix = prefix_store(model).prefixes[adapter_name]
    tensors = {
        f"{STORE_ATTRIBUTE}.prefixes.{adapter_name}.{name}": parameter
        for name, parameter in prefix.named_parameters()
    }
    if with_head:
        tensors.update(head_parameters(model))
    return tensors
