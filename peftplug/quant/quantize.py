"""Quantize a float weight to NF4 and back, rounding exactly as bitsandbytes does."""

from __future__ import annotations

import torch

from peftplug.nf4_format import (
    ABSMAX_BLOCKSIZE,
    NF4_ZERO_INDEX,
    NF4FormatError,
    check_blocksize,
    dynamic_code,
    nf4_code,
)
from peftplug.ops import nf4_dequantize
from peftplug.quant.format import NF4Weight

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _blockwise_codes(
    values: torch.Tensor, code: torch.Tensor, blocksize: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the nearest code value after scaling each block by its absmax (ties round down).

    Full blocks multiply by the reciprocal and a short last block divides, as bitsandbytes
    does, because the two can differ in the last bit and move a value across a midpoint.
    """
    flat = values.reshape(-1).float()
    full = flat.numel() - flat.numel() % blocksize
    body = flat[:full].view(-1, blocksize)
    absmax = body.abs().amax(dim=1)
    scaled = torch.clamp(body * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if full < flat.numel():
        tail_max = flat[full:].abs().max()
        absmax = torch.cat([absmax, tail_max.view(1)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / tail_max.clamp(min=1e-38), -1, 1)])
    midpoints = (code[:-1] + code[1:]) / 2
    return torch.bucketize(scaled, midpoints, out_int32=True).to(torch.uint8), absmax


def _check_weight(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dtype not in FLOAT_DTYPES:
        got = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise NF4FormatError(
            f"only floating-point weights can be quantized to NF4, got {got}; "
            "pass the float weight (e.g. layer.weight.data.float())"
        )
    if weight.numel() == 0:
        raise NF4FormatError("cannot quantize an empty weight to NF4: it has no values")
    if not torch.isfinite(weight).all():
        raise NF4FormatError("the weight holds inf or nan values; NF4 needs finite values")


def quantize_nf4(weight: torch.Tensor, blocksize: int = 64, double_quant: bool = False) -> NF4Weight:
    """Pack ``weight`` into NF4: blocks of ``blocksize`` values share one absmax.

    Any size works: a short last block gets its own absmax and an odd count is padded with
    the code of 0.0. ``double_quant`` stores the absmax values as 8-bit codes (QLoRA's double
    quantization: about 4.13 instead of 4.5 bits per weight at blocksize 64).
    """
    check_blocksize(blocksize)
    _check_weight(weight)
    weight = weight.detach()
    indices, absmax = _blockwise_codes(weight, nf4_code(weight.device), blocksize)
    if indices.numel() % 2:
        indices = torch.cat([indices, indices.new_full((1,), NF4_ZERO_INDEX)])
    packed = (indices[0::2] << 4) | indices[1::2]
    if not double_quant:
        return NF4Weight(packed, absmax, tuple(weight.shape), blocksize, weight.dtype)
    offset = absmax.mean()
    absmax_codes, absmax_scale = _blockwise_codes(
        absmax - offset, dynamic_code(weight.device), ABSMAX_BLOCKSIZE
    )
    return NF4Weight(
        packed, absmax_codes, tuple(weight.shape), blocksize, weight.dtype, absmax_scale, offset
    )


def dequantize_nf4(weight: NF4Weight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The float weight NF4 stands for, in ``dtype`` (default: the dtype it was quantized from)."""
    return nf4_dequantize(
        weight.packed, weight.block_absmax(), weight.shape, weight.blocksize, dtype or weight.dtype
    )


def quantization_error(weight: torch.Tensor, quantized: NF4Weight) -> dict[str, float]:
    """How far the NF4 weight is from ``weight``: max abs error and relative RMS error."""
    difference = dequantize_nf4(quantized, torch.float32) - weight.float()
    norm = weight.float().norm().clamp(min=1e-30)
    return {
        "max_abs_error": difference.abs().max().item(),
        "relative_rms_error": (difference.norm() / norm).item(),
    }

