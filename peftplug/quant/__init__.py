"""NF4 (4-bit NormalFloat) quantization, bit-compatible with bitsandbytes, and the 4-bit linear layer."""

from peftplug.nf4_format import (
    NF4_CODE_VALUES,
    SUPPORTED_BLOCKSIZES,
    NF4FormatError,
    dynamic_code,
    nf4_code,
)
from peftplug.quant.bitsandbytes import from_bitsandbytes, to_bitsandbytes
from peftplug.quant.format import NF4Weight
from peftplug.quant.linear import NF4Linear
from peftplug.quant.quantize import dequantize_nf4, quantization_error, quantize_nf4

__all__ = [
    "NF4_CODE_VALUES",
    "SUPPORTED_BLOCKSIZES",
    "NF4FormatError",
    "NF4Linear",
    "NF4Weight",
    "dequantize_nf4",
    "dynamic_code",
    "from_bitsandbytes",
    "nf4_code",
    "quantization_error",
    "quantize_nf4",
    "to_bitsandbytes",
]
