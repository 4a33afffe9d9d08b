"""peftplug hook implementations for BitFit."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from peftplug import MethodSpec, hookimpl
from peftplug_bitfit.claims import claim, claimed_parameters
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
        )
    )


@hookimpl
def peftplug_prepare_model(
    model: nn.Module, config: object, adapter_name: str
) -> Callable[[], None] | None:
    if not isinstance(config, BitFitConfig):
        return None
    parameters = list(select_parameters(model, config).values())
    forget = claim(model, adapter_name, parameters)
    for parameter in parameters:
        parameter.requires_grad_(True)
    return forget


@hookimpl
def peftplug_state_dict(
    model: nn.Module, config: object, adapter_name: str
) -> dict[str, torch.Tensor] | None:
    if not isinstance(config, BitFitConfig):
        return None
    return claimed_parameters(model, adapter_name)
