"""peftplug hook implementations for QLoRA."""

from __future__ import annotations

from collections.abc import Callable

from peftplug_lora import LoraLinear
from torch import nn

from peftplug import MethodSpec, hookimpl
from peftplug.quant import NF4Linear
from peftplug.targets import find_targets
from peftplug_qlora.config import QLoraConfig
from peftplug_qlora.layer import QLoraLinear
from peftplug_qlora.quantize_model import (
    awaiting_quantization,
    dequantize_layers,
    quantize_linear,
    quantize_paths,
)


@hookimpl
def peftplug_register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(
        MethodSpec(
            "qlora",
            QLoraConfig,
            "LoRA over an NF4 4-bit base (QLoRA)",
            comparison={"learning_rate": 2e-3, "options": {"r": 8, "alpha": 16}},
            starts_at_base=True,
        )
    )


@hookimpl
def peftplug_prepare_model(
    model: nn.Module, config: object, adapter_name: str
) -> Callable[[], None] | None:
    """Quantize the selected layers LoRA does not wrap (those are quantized as they are wrapped)."""
    if not isinstance(config, QLoraConfig):
        return None
    existing = {id(m) for m in model.modules() if isinstance(m, NF4Linear)}
    targets = set(find_targets(model, config))
    for path in quantize_paths(model, config):
        if path in targets:
            awaiting_quantization.add(model.get_submodule(path))
        else:
            model.set_submodule(path, quantize_linear(model.get_submodule(path), config))
    # Unloading leaves float layers holding the dequantized weights: NF4 rounding stays.
    return lambda: dequantize_layers(model, keep=lambda layer: id(layer) in existing)


@hookimpl(tryfirst=True)
def peftplug_replace_module(
    module: nn.Module, name: str, config: object, adapter_name: str
) -> nn.Module | None:
    """Quantize a selected float target and wrap it; LoRA's own hook handles the rest."""
    if not isinstance(config, QLoraConfig) or isinstance(module, LoraLinear):
        return None
    if isinstance(module, NF4Linear):
        layer = QLoraLinear(module)
    elif module in awaiting_quantization:
        awaiting_quantization.discard(module)
        layer = QLoraLinear(quantize_linear(module, config))
    else:
        return None
    layer.add_adapter(adapter_name, config)
    return layer
