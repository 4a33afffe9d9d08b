"""The packed NF4 layout (bitsandbytes-compatible) and its checks.

A weight of ``n`` values is cut into blocks of ``blocksize`` consecutive values (row-major;
the last block may be short). Each value becomes the index of the nearest NF4 code value
after dividing by its block's absolute maximum; two indices share a byte, the first one in
the high nibble. An odd count is padded with the code of 0.0. With double quantization the
float32 absmax values are stored as 8-bit dynamic codes in blocks of 256, with one float32
scale per 256 and one float32 offset (their mean).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from peftplug.errors import PeftplugError

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


def check_packed(packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, ...], blocksize: int) -> None:
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


@dataclasses.dataclass(frozen=True, eq=False)
class NF4Weight:
    """A weight in packed NF4: ``packed`` bytes and per-block ``absmax``.

    Double-quantized when ``absmax_scale`` is set: ``absmax`` then holds uint8 codes of
    ``absmax - absmax_offset`` in blocks of 256, each block scaled by ``absmax_scale``.
    ``dtype`` is the dtype the weight had (what ``dequantize`` returns by default).
    """

    packed: torch.Tensor
    absmax: torch.Tensor
    shape: tuple[int, ...]
    blocksize: int = 64
    dtype: torch.dtype = torch.float32
    absmax_scale: torch.Tensor | None = None
    absmax_offset: torch.Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        check_packed(self.packed, self.absmax, self.shape, self.blocksize)
        if self.double_quantized:
            if self.absmax.dtype != torch.uint8 or self.absmax_offset is None:
                raise NF4FormatError(
                    "a double-quantized NF4 weight needs uint8 absmax codes, absmax_scale and "
                    "absmax_offset together"
                )
            expected = block_count(self.absmax.numel(), ABSMAX_BLOCKSIZE)
            if self.absmax_scale.numel() != expected:
                raise NF4FormatError(
                    f"absmax_scale has {self.absmax_scale.numel()} values but "
                    f"{self.absmax.numel()} absmax codes in blocks of {ABSMAX_BLOCKSIZE} need "
                    f"{expected}"
                )
        elif not self.absmax.is_floating_point():
            raise NF4FormatError(
                f"absmax must be float32 (or uint8 codes with absmax_scale for double "
                f"quantization), got {self.absmax.dtype}"
            )

    @property
    def double_quantized(self) -> bool:
        """Whether the absmax values are themselves quantized to 8 bits."""
        return self.absmax_scale is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the packed weight really occupies (codes, absmax and its statistics)."""
        tensors = [self.packed, self.absmax, self.absmax_scale, self.absmax_offset]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def block_absmax(self) -> torch.Tensor:
        """The float32 absmax of every block (decoded when double-quantized)."""
        if not self.double_quantized:
            return self.absmax.float()
        from peftplug.quant.codes import dynamic_code

        codes = dynamic_code(self.absmax.device)[self.absmax.long()]
        blocks = block_count(codes.numel(), ABSMAX_BLOCKSIZE)
        padded = torch.nn.functional.pad(codes, (0, blocks * ABSMAX_BLOCKSIZE - codes.numel()))
        scaled = padded.view(blocks, ABSMAX_BLOCKSIZE) * self.absmax_scale.view(-1, 1)
        return scaled.reshape(-1)[: codes.numel()] + self.absmax_offset

    def to(self, device: torch.device | str) -> NF4Weight:
        """The same weight on another device."""
        move = lambda t: None if t is None else t.to(device)
        return dataclasses.replace(
            self,
            packed=move(self.packed),
            absmax=move(self.absmax),
            absmax_scale=move(self.absmax_scale),
            absmax_offset=move(self.absmax_offset),
        )
