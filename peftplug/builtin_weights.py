"""Built-in plugin: dense base weights of ``nn.Linear``, transformers' ``Conv1D`` and ``NF4Linear``.

Registered last-resort (``trylast``) so another plugin can claim these layer types first.
What ``get`` returns differs by type (see ``peftplug_get_base_weight``): write it back with
``set``, never in place.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftplug.hookspecs import hookimpl
from peftplug.quant.linear import NF4Linear


@hookimpl(trylast=True)
def peftplug_get_base_weight(module: nn.Module) -> torch.Tensor | None:
    """``nn.Linear``: the live weight; ``Conv1D`` (in, out): a transposed view of it;
    ``NF4Linear``: a new dequantized tensor in the compute dtype."""
    if isinstance(module, nn.Linear):
        return module.weight.data
    if isinstance(module, Conv1D):
        return module.weight.data.T
    if isinstance(module, NF4Linear):
        return module.dequantize()
    return None


@hookimpl(trylast=True)
def peftplug_set_base_weight(
    module: nn.Module, weight: torch.Tensor
) -> bool | dict[str, float] | None:
    """Copy a dense (out, in) weight into the layer, in its own layout and dtype.

    ``NF4Linear`` quantizes it again and returns the rounding error that added.
    """
    if isinstance(module, nn.Linear):
        module.weight.data.copy_(weight)
        return True
    if isinstance(module, Conv1D):
        module.weight.data.copy_(weight.T)
        return True
    if isinstance(module, NF4Linear):
        return module.requantize(weight)
    return None
