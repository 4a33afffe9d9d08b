"""The task head a virtual-token adapter trains and saves beside its tokens.

All head handling of the virtual-token methods goes through ``task_head``, so it can give way
to a core facility in one place.
"""

from __future__ import annotations

from torch import nn

from peftplug.targets import task_head_names
from peftplug_prompt.virtual_tokens.config import VirtualTokenConfig


def task_head(model: nn.Module, config: VirtualTokenConfig) -> dict[str, nn.Parameter]:
    """The task head's parameters by ``model.state_dict()`` name; none unless ``train_head``."""
    if not config.train_head:
        return {}
    return {
        f"{head}.{name}": parameter
        for head in task_head_names(model)
        for name, parameter in model.get_submodule(head).named_parameters()
    }
