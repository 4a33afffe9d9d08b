"""peftplug hook implementations for BitFit."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from peftplug import MethodSpec, hookimpl
from peftplug.in_place import Owner, in_place_tensors, train_in_place
from peftplug.targets import task_head_names
from peftplug_bitfit.config import BitFitConfig
from peftplug_bitfit.selection import select_parameters


@hookimpl
def peftplug_register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(
        MethodSpec(
            "bitfit",
            BitFitConfig,
            "Train only the bias terms in place (BitFit)",
            comparison={"learning_rate": 3e-3},
            starts_at_base=True,
            trains_in_place=True,
        )
    )


@hookimpl
def peftplug_prepare_model(
    model: nn.Module, config: object, adapter_name: str
) -> Callable[[], None] | None:
    if not isinstance(config, BitFitConfig):
        return None
    parameters = list(select_parameters(model, config).items())
    return train_in_place(model, Owner("bitfit", adapter_name), parameters)


@hookimpl
def peftplug_modules_to_save(
    model: nn.Module, config: object, adapter_name: str
) -> list[str] | None:
    if not isinstance(config, BitFitConfig):
        return None
    return task_head_names(model) if config.train_head else []


@hookimpl
def peftplug_state_dict(
    model: nn.Module, config: object, adapter_name: str
) -> dict[str, torch.Tensor] | None:
    if not isinstance(config, BitFitConfig):
        return None
    return in_place_tensors(model, Owner("bitfit", adapter_name))
