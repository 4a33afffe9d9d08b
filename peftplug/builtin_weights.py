"""Built-in plugin: dense base weights of ``nn.Linear`` and transformers' ``Conv1D``.

Registered last-resort (``trylast``) so a quantization plugin can claim its own layer types.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftplug.hookspecs import hookimpl


@hookimpl(trylast=True)
def peftplug_get_base_weight(module: nn.Module) -> torch.Tensor | None:
    """``nn.Linear`` stores (out, in); ``Conv1D`` stores (in, out) and is transposed."""
    if isinstance(module, nn.Linear):
        return module.weight.data
    if isinstance(module, Conv1D):
        return module.weight.data.T
    return None


@hookimpl(trylast=True)
def peftplug_set_base_weight(module: nn.Module, weight: torch.Tensor) -> bool | None:
    """Copy a dense (out, in) weight into the layer, in its own layout and dtype."""
    if isinstance(module, nn.Linear):
        module.weight.data.copy_(weight)
        return True
    if isinstance(module, Conv1D):
        module.weight.data.copy_(weight.T)
        return True
    return None
