"""The base class of modules that wrap a base layer with named adapters, and base-weight access."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from peftplug.errors import NotMergeableError, PeftplugError


def get_base_weight(module: nn.Module) -> torch.Tensor:
    """The dense (out, in) weight of a base layer, whatever stores it (asks the plugins)."""
    from peftplug.plugins import get_host

    weight = get_host().hook.peftplug_get_base_weight(module=module)
    if weight is None:
        raise PeftplugError(
            f"no installed plugin can read the weight of a {type(module).__name__}; "
            "install the plugin that provides this layer type"
        )
    return weight


def set_base_weight(module: nn.Module, weight: torch.Tensor) -> Any:
    """Store a dense (out, in) weight into a base layer (asks the plugins)."""
    from peftplug.plugins import get_host

    result = get_host().hook.peftplug_set_base_weight(module=module, weight=weight)
    if not result:
        raise PeftplugError(
            f"no installed plugin can write the weight of a {type(module).__name__}; "
            "install the plugin that provides this layer type"
        )
    return result


class AdapterLayer(nn.Module):
    """Wraps ``base_layer`` and adds one or more named adapters of one method.

    Subclasses hold each adapter's parameters under its name, implement ``forward`` (calling
    ``self.adapter_active()`` to decide whether to add their update), ``adapter_names``,
    ``adapter_parameters``, ``delete_adapter`` and, for additive methods, ``delta_weight``.
    Non-additive methods override ``merge``/``unmerge``; methods that cannot merge set
    ``mergeable = False`` and ``not_mergeable_reason``.
    """

    mergeable: ClassVar[bool] = True
    not_mergeable_reason: ClassVar[str] = ""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.active_adapter: str | None = None
        self.disabled = False
        self.merged_adapters: list[str] = []

    @property
    def adapter_names(self) -> list[str]:
        """Names of the adapters this layer holds."""
        raise NotImplementedError

    def adapter_parameters(self, name: str) -> Iterator[nn.Parameter]:
        """The trainable parameters of adapter ``name``."""
        raise NotImplementedError

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name`` from this layer."""
        raise NotImplementedError

    def delta_weight(self, name: str) -> torch.Tensor:
        """The additive (out, in) update adapter ``name`` makes to the base weight."""
        raise NotImplementedError

    def adapter_active(self) -> bool:
        """Whether forward should add the active adapter's (unmerged) update."""
        return (
            not self.disabled
            and self.active_adapter is not None
            and self.active_adapter not in self.merged_adapters
        )

    def set_active_adapter(self, name: str | None) -> None:
        """Make ``name`` the adapter that runs and trains; the others are frozen."""
        if self.merged_adapters:
            raise PeftplugError("unmerge the model before switching adapters (peftplug.unmerge)")
        self.active_adapter = name if name in self.adapter_names else None
        for adapter in self.adapter_names:
            for parameter in self.adapter_parameters(adapter):
                parameter.requires_grad_(adapter == self.active_adapter)

    def merge(self) -> None:
        """Fold the active adapter into the base weight."""
        name = self.active_adapter
        if not self.mergeable:
            raise NotMergeableError(self.not_mergeable_reason)
        if name is None or name in self.merged_adapters:
            return
        weight = get_base_weight(self.base_layer)
        delta = self.delta_weight(name).to(weight.dtype)
        set_base_weight(self.base_layer, weight + delta)
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Take every merged adapter back out of the base weight."""
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            weight = get_base_weight(self.base_layer)
            set_base_weight(self.base_layer, weight - self.delta_weight(name).to(weight.dtype))
