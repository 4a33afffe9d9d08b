"""Swap a model's float linear layers for NF4 ones and back; measure what the weights occupy."""

from __future__ import annotations

import weakref
from collections.abc import Callable

from torch import nn

from peftplug import TargetedConfig, TargetError
from peftplug.quant import NF4Linear
from peftplug.targets import find_targets
from peftplug_qlora.config import QLoraConfig

# Float targets that prepare_model selected; replace_module quantizes each as it wraps it.
awaiting_quantization: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def quantize_linear(linear: nn.Linear, config: QLoraConfig) -> NF4Linear:
    """An ``NF4Linear`` holding ``linear``'s weight in 4 bits, in the config's format."""
    return NF4Linear.from_linear(
        linear,
        blocksize=config.blocksize,
        double_quant=config.double_quant,
        compute_dtype=config.dtype_for(linear.weight.dtype),
    )


def quantize_paths(model: nn.Module, config: QLoraConfig) -> list[str]:
    """The float ``nn.Linear`` layers ``quantize_modules`` selects (none left is not an error)."""
    selection = TargetedConfig(target_modules=config.quantize_modules)
    try:
        paths = find_targets(model, selection)
    except TargetError:
        return []
    return [path for path in paths if type(model.get_submodule(path)) is nn.Linear]


def dequantize_linear(layer: NF4Linear) -> nn.Linear:
    """A float ``nn.Linear`` with the weight the NF4 layer stands for."""
    weight = layer.dequantize()
    linear = nn.Linear(
        layer.in_features,
        layer.out_features,
        bias=layer.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    linear.weight.data.copy_(weight)
    if layer.bias is not None:
        linear.bias.data.copy_(layer.bias.data)
    linear.requires_grad_(False)
    return linear


def dequantize_layers(
    model: nn.Module, keep: Callable[[NF4Linear], bool] = lambda _: False
) -> None:
    """Replace every ``NF4Linear`` in ``model`` (but those ``keep`` accepts) by a float layer."""
    for path, module in list(model.named_modules()):
        if isinstance(module, NF4Linear) and not keep(module):
            model.set_submodule(path, dequantize_linear(module))


def weight_memory(model: nn.Module) -> dict[str, int]:
    """Bytes held by the model's weights: all of them, the 4-bit layers, and those layers in fp32/bf16.

    Tied weights (the LM head sharing the embedding) are counted once.
    """
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    layers = [m for m in model.modules() if isinstance(m, NF4Linear)]
    quantized = sum(layer.memory_bytes for layer in layers)
    parameters = sum(layer.in_features * layer.out_features for layer in layers)
    biases = sum(layer.out_features for layer in layers if layer.bias is not None)
    return {
        "model_bytes": total,
        "nf4_layer_bytes": quantized,
        "nf4_layers_as_fp32_bytes": 4 * (parameters + biases),
        "nf4_layers_as_bf16_bytes": 2 * (parameters + biases),
    }
