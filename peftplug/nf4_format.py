"""NF4's code tables and packed layout, shared by ``peftplug.ops`` and ``peftplug.quant``.

The code tables of 4-bit NormalFloat and of its 8-bit absmax compression are the ones
bitsandbytes uses, so packed weights convert between the two bit for bit.

A weight of ``n`` values is cut into blocks of ``blocksize`` consecutive values (row-major;
the last block may be short). Each value becomes the index of the nearest NF4 code value
after dividing by its block's absolute maximum; two indices share a byte, the first one in
the high nibble. An odd count is padded with the code of 0.0. With double quantization the
float32 absmax values are stored as 8-bit dynamic codes in blocks of 256, with one float32
scale per 256 and one float32 offset (their mean).

A leaf: it imports nothing from peftplug but the errors.
"""

from __future__ import annotations

import functools
import math

import torch

from peftplug.errors import PeftplugError

# The 16 NF4 values of the QLoRA paper (Dettmers et al. 2023, appendix E), sorted.
NF4_CODE_VALUES: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
NF4_ZERO_INDEX = 7  # the code of 0.0: what a padding nibble holds


@functools.cache
def _nf4_code_cpu() -> torch.Tensor:
    return torch.tensor(NF4_CODE_VALUES, dtype=torch.float32)


def nf4_code(device: torch.device | str = "cpu") -> torch.Tensor:
    """The 16 NF4 values as a float32 tensor on ``device``."""
    return _nf4_code_cpu().to(device)


@functools.cache
def _dynamic_code_cpu() -> torch.Tensor:
    """The signed 8-bit dynamic-exponent map (Dettmers 2015): 7 exponent decades, 256 values.

    Computed in float32 exactly as bitsandbytes' ``create_dynamic_map(signed=True)`` does, so
    the values agree to the last bit.
    """
    values: list[float] = []
    exponent_bits, non_sign_bits = 7, 7
    for i in range(exponent_bits):
        count = 2 ** (i + non_sign_bits - exponent_bits) + 1
        bounds = torch.linspace(0.1, 1, count, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        decade = 10 ** (-(exponent_bits - 1) + i)
        values += (decade * means).tolist()
        values += (-decade * means).tolist()
    values += [0.0, 1.0]
    values.sort()
    return torch.tensor(values, dtype=torch.float32)


def dynamic_code(device: torch.device | str = "cpu") -> torch.Tensor:
    """The 256 values of the 8-bit code that compresses absmax under double quantization."""
    return _dynamic_code_cpu().to(device)


SUPPORTED_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
ABSMAX_BLOCKSIZE = 256  # double quantization: absmax values per 8-bit block


class NF4FormatError(PeftplugError, ValueError):
    """Packed NF4 data that does not fit its declared shape, or options NF4 cannot take."""


def check_blocksize(blocksize: int) -> None:
    """Refuse block sizes bitsandbytes does not use."""
    if blocksize not in SUPPORTED_BLOCKSIZES:
        raise NF4FormatError(
            f"NF4 blocksize {blocksize} is not supported: use one of "
            f"{', '.join(map(str, SUPPORTED_BLOCKSIZES))} (64 is the QLoRA default)"
        )


def block_count(numel: int, blocksize: int) -> int:
    """Blocks (one absmax each) that cover ``numel`` values; the last may be short."""
    return math.ceil(numel / blocksize)


def check_packed(
    packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, ...], blocksize: int
) -> None:
    """Raise NF4FormatError unless ``packed`` and ``absmax`` hold exactly a ``shape`` weight."""
    check_blocksize(blocksize)
    numel = math.prod(shape)
    if packed.dtype != torch.uint8:
        raise NF4FormatError(
            f"packed NF4 data must be uint8 (two 4-bit codes per byte), got {packed.dtype}; "
            "quantize with peftplug.quant.quantize_nf4"
        )
    if packed.numel() != math.ceil(numel / 2):
        raise NF4FormatError(
            f"packed NF4 data has {packed.numel()} bytes but a {tuple(shape)} weight needs "
            f"{math.ceil(numel / 2)}: pass the shape the weight was quantized with"
        )
    blocks = block_count(numel, blocksize)
    if absmax.numel() != blocks:
        raise NF4FormatError(
            f"absmax has {absmax.numel()} values but a {tuple(shape)} weight in blocks of "
            f"{blocksize} needs {blocks}: pass the blocksize it was quantized with"
        )
