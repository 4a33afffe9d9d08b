"""Resolving ``modules_to_save``: modules trained in full beside the adapter."""

from __future__ import annotations

from torch import nn

from peftplug import TargetError
from peftplug.errors import did_you_mean
from peftplug.targets import task_head_names, walk
from peftplug_lora.config import LoraConfig


def saved_module_names(model: nn.Module, config: LoraConfig) -> list[str]:
    """Module paths named by ``modules_to_save`` (a name matches itself or a path suffix)."""
    if config.modules_to_save == "auto":
        return task_head_names(model)
    paths = [path for path, _ in walk(model)]
    found: list[str] = []
    for wanted in config.modules_to_save:
        matches = [p for p in paths if p == wanted or p.endswith("." + wanted)]
        if not matches:
            leaves = {p.rsplit(".", 1)[-1] for p in paths}
            raise TargetError(
                f"modules_to_save names {wanted!r}, which is not a module of this model"
                f"{did_you_mean(wanted, leaves)}"
            )
        found.extend(matches)
    return found
