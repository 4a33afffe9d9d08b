"""Merging LoRA over a 4-bit base: re-quantize in place, or export a merged float model."""

from __future__ import annotations

from torch import nn

import peftplug
from peftplug.quant import NF4Linear
from peftplug_qlora.quantize_model import dequantize_layers


def merge_requantized(model: nn.Module) -> dict[str, dict[str, float]]:
    """Fold the active adapter into the 4-bit weights (dequantize, add, quantize again).

    Returns, per merged layer, the rounding error the re-quantization added (max abs error
    and RMS error relative to the float merged weight). ``peftplug.unmerge`` subtracts the
    update again, re-quantizing once more, so the round trip is not exact.
    """
    peftplug.merge(model)
    return {
        path.removesuffix(".base_layer"): module.requantization_error
        for path, module in model.named_modules()
        if isinstance(module, NF4Linear) and module.requantization_error is not None
    }


def merge_to_float(model: nn.Module) -> nn.Module:
    """The plain float model: 4-bit weights dequantized, the active adapter added, no error added."""
    dequantize_layers(model)
    return peftplug.unload(model, merge=True)
