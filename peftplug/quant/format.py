"""``NF4Weight``: one weight in the packed NF4 layout described in ``peftplug.nf4_format``."""

from __future__ import annotations

import dataclasses
import math

import torch

from peftplug.nf4_format import (
    ABSMAX_BLOCKSIZE,
    NF4FormatError,
    block_count,
    check_packed,
    dynamic_code,
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
