"""peftplug hook implementations for bottleneck adapters."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from peftplug import MethodSpec, hookimpl
from peftplug_adapter.config import AdapterConfig
from peftplug_adapter.insertion import insert_adapters, saved_module_names
from peftplug_adapter.layer import BottleneckAdapterLayer


@hookimpl
def peftplug_register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(
        MethodSpec(
            "adapter",
            AdapterConfig,
            "Bottleneck adapters in every block (Houlsby, Pfeiffer or parallel placement)",
            comparison={"learning_rate": 2e-3},
            starts_at_base=True,
        )
    )


@hookimpl
def peftplug_prepare_model(
    model: nn.Module, config: object, adapter_name: str
) -> Callable[[], None] | None:
    if not isinstance(config, AdapterConfig):
        return None
    return insert_adapters(model, config, adapter_name)


@hookimpl
def peftplug_modules_to_save(
    model: nn.Module, config: object, adapter_name: str
) -> list[str] | None:
    if not isinstance(config, AdapterConfig):
        return None
    return saved_module_names(model, config)


@hookimpl
def peftplug_state_dict(
    model: nn.Module, config: object, adapter_name: str
) -> dict[str, torch.Tensor] | None:
    if not isinstance(config, AdapterConfig):
        return None
    tensors: dict[str, torch.Tensor] = {}
    for path, module in model.named_modules():
        if isinstance(module, BottleneckAdapterLayer) and adapter_name in module.adapter_down:
            for part in ("adapter_down", "adapter_up"):
                projection = getattr(module, part)[adapter_name]
                tensors[f"{path}.{part}.{adapter_name}.weight"] = projection.weight
                tensors[f"{path}.{part}.{adapter_name}.bias"] = projection.bias
    return tensors
