"""One store on the model holding every adapter's virtual-token module, by adapter name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn

from peftplug import AdapterLayer


class VirtualTokenStore(AdapterLayer):
    """Every adapter's virtual-token module of one mechanism, in one ``nn.ModuleDict``.

    An ``AdapterLayer``, so ``set_active_adapter``, ``disable_adapters`` and ``delete_adapter``
    reach it like any adapter layer. Subclasses set ``modules_attribute``, the dict's name: it
    is part of every saved tensor's key, so it must not change once adapters are saved.
    Virtual tokens add positions instead of changing a weight: a store is never mergeable.
    """

    mergeable = False
    modules_attribute: ClassVar[str]

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.add_module(self.modules_attribute, nn.ModuleDict())

    @property
    def adapter_modules(self) -> nn.ModuleDict:
        """The virtual-token module of each adapter, by adapter name."""
        return getattr(self, self.modules_attribute)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapter_modules.keys())

    def add_adapter(self, name: str, module: nn.Module) -> None:
        """Hold ``module`` as adapter ``name``'s virtual-token source."""
        self.adapter_modules[name] = module

    def adapter_parameters(self, name: str) -> Iterator[nn.Parameter]:
        yield from self.adapter_modules[name].parameters()

    def delete_adapter(self, name: str) -> None:
        del self.adapter_modules[name]
        if self.active_adapter == name:
            self.active_adapter = None

    def active_module(self) -> nn.Module | None:
        """The active adapter's module, or ``None`` when adapters are off or none is active."""
        return self.adapter_modules[self.active_adapter] if self.adapter_active() else None

    def adapter_tensors(self, model: nn.Module, name: str) -> dict[str, torch.Tensor]:
        """Adapter ``name``'s live parameters, keyed as in ``model.state_dict()``."""
        path = next(path for path, module in model.named_modules() if module is self)
        return {
            f"{path}.{self.modules_attribute}.{name}.{key}": parameter
            for key, parameter in self.adapter_modules[name].named_parameters()
        }

    def extra_repr(self) -> str:
        return f"adapters={self.adapter_names}"
