"""The task head facility: modules a method trains in full, one copy per adapter.

A method names the modules it trains in full (``modules_to_save``, by default the task head of a
classification model) through ``peftplug_modules_to_save``. The core wraps each in a
``SavedModuleLayer``, which keeps the original and gives every adapter its own trainable copy,
as HF PEFT's ``ModulesToSaveWrapper`` does: switching adapters switches heads, disabling
adapters runs the original, deleting an adapter deletes its copy. The layer's ledger records
which methods of an adapter use its copy, so two methods of one adapter share one head.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn

from peftplug.errors import TargetError, did_you_mean
from peftplug.layers import AdapterLayer
from peftplug.targets import task_head_names, walk

ModulesToSave = Sequence[str] | Literal["auto"]


class SavedModuleLayer(AdapterLayer):
    """``base_layer`` (the original module) plus a trained copy per adapter."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.modules_to_save = nn.ModuleDict()
        self.owners: dict[str, list[str]] = {}
        self._unmerged_state: dict[str, torch.Tensor] | None = None

    @property
    def adapter_names(self) -> list[str]:
        return list(self.modules_to_save.keys())

    def add_adapter(self, name: str, method: str) -> None:
        """Give adapter ``name`` its own trainable copy of the original (shared by its methods)."""
        if name not in self.modules_to_save:
            self.modules_to_save[name] = copy.deepcopy(self.base_layer).requires_grad_(True)
        self.owners.setdefault(name, []).append(method)

    def adapter_parameters(self, name: str) -> Iterator[nn.Parameter]:
        yield from self.modules_to_save[name].parameters()

    def delete_adapter(self, name: str) -> None:
        del self.modules_to_save[name]
        self.owners.pop(name, None)
        if self.active_adapter == name:
            self.active_adapter = None

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """Adapter ``name``'s live tensors, keyed relative to this layer."""
        state = self.modules_to_save[name].state_dict(keep_vars=True)
        return {f"modules_to_save.{name}.{key}": tensor for key, tensor in state.items()}

    def merge(self) -> None:
        """Copy the active adapter's module into the original (kept for ``unmerge``)."""
        name = self.active_adapter
        if name is None or name in self.merged_adapters:
            return
        original = self.base_layer.state_dict()
        self._unmerged_state = {key: value.clone() for key, value in original.items()}
        self.base_layer.load_state_dict(self.modules_to_save[name].state_dict())
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if self.merged_adapters and self._unmerged_state is not None:
            self.base_layer.load_state_dict(self._unmerged_state)
            self._unmerged_state = None
        self.merged_adapters.clear()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.adapter_active():
            return self.modules_to_save[self.active_adapter](*args, **kwargs)
        return self.base_layer(*args, **kwargs)


def resolve_modules_to_save(
    model: nn.Module, wanted: ModulesToSave, option: str = "modules_to_save"
) -> list[str]:
    """Module paths for ``wanted``: ``"auto"`` is the task head; a name matches itself or any
    path ending with ``.name``. ``option`` names the user's option in errors."""
    if wanted == "auto":
        return task_head_names(model)
    paths = [path for path, _ in walk(model)]
    found: list[str] = []
    for name in wanted:
        matches = [p for p in paths if p == name or p.endswith("." + name)]
        if not matches:
            leaves = {p.rsplit(".", 1)[-1] for p in paths}
            raise TargetError(
                f"{option} names {name!r}, which is not a module of this model"
                f"{did_you_mean(name, leaves | set(paths))}"
            )
        found.extend(matches)
    return found


def save_module(model: nn.Module, path: str, adapter_name: str, method: str) -> SavedModuleLayer:
    """Wrap the module at ``path`` (once) and give ``adapter_name`` a copy of it."""
    module = model.get_submodule(path)
    if isinstance(module, SavedModuleLayer):
        layer = module
    elif isinstance(module, AdapterLayer):
        raise TargetError(
            f"{path!r} is in modules_to_save but is already wrapped by a method "
            f"({type(module).__name__}): train it in full or adapt it, not both; remove it "
            "from target_modules or from modules_to_save"
        )
    else:
        layer = SavedModuleLayer(module)
        model.set_submodule(path, layer)
    layer.add_adapter(adapter_name, method)
    return layer


def saved_module_layers(
    model: nn.Module, adapter_name: str, method: str
) -> dict[str, SavedModuleLayer]:
    """The layers whose copy for ``adapter_name`` ``method`` uses (the ledger), by path."""
    return {
        path: module
        for path, module in model.named_modules()
        if isinstance(module, SavedModuleLayer) and method in module.owners.get(adapter_name, [])
    }


def saved_module_tensors(
    model: nn.Module, adapter_name: str, method: str
) -> dict[str, torch.Tensor]:
    """The live tensors of the copies ``method`` uses for ``adapter_name``, by state-dict name."""
    return {
        f"{path}.{key}": tensor
        for path, layer in saved_module_layers(model, adapter_name, method).items()
        for key, tensor in layer.tensors(adapter_name).items()
    }
