"""``NF4Linear``: a frozen linear layer whose weight is stored in packed 4-bit NF4."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from peftplug import ops
from peftplug.nf4_format import ABSMAX_BLOCKSIZE, block_count, check_blocksize
from peftplug.quant.format import NF4Weight
from peftplug.quant.quantize import dequantize_nf4, quantization_error, quantize_nf4

_QUANT_BUFFERS = ("weight_packed", "weight_absmax", "weight_absmax_scale", "weight_absmax_offset")


class NF4Linear(nn.Module):
    """``y = x @ deq(W)^T + b`` with W held as NF4 codes and absmax; nothing here trains.

    The packed codes and absmax stay as stored when the module moves between devices or is
    cast (``model.to(torch.bfloat16)``): a cast changes ``compute_dtype``, the dtype the
    layer computes and returns in, and the bias. ``state_dict`` holds the packed tensors.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        blocksize: int = 64,
        double_quant: bool = False,
        compute_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        check_blocksize(blocksize)
        self.in_features, self.out_features = in_features, out_features
        self.blocksize, self.double_quant, self.compute_dtype = blocksize, double_quant, compute_dtype
        self.requantization_error: dict[str, float] | None = None
        numel = in_features * out_features
        blocks = block_count(numel, blocksize)
        self.register_buffer("weight_packed", torch.zeros(math.ceil(numel / 2), dtype=torch.uint8, device=device))
        absmax_dtype = torch.uint8 if double_quant else torch.float32
        self.register_buffer("weight_absmax", torch.zeros(blocks, dtype=absmax_dtype, device=device))
        scales = block_count(blocks, ABSMAX_BLOCKSIZE) if double_quant else None
        self.register_buffer(
            "weight_absmax_scale",
            None if scales is None else torch.zeros(scales, dtype=torch.float32, device=device),
        )
        self.register_buffer(
            "weight_absmax_offset",
            torch.zeros((), dtype=torch.float32, device=device) if double_quant else None,
        )
        self.bias = (
            nn.Parameter(torch.zeros(out_features, dtype=compute_dtype, device=device), requires_grad=False)
            if bias
            else None
        )

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, *, blocksize: int = 64, double_quant: bool = False,
        compute_dtype: torch.dtype | None = None,
    ) -> NF4Linear:
        """Quantize a float ``nn.Linear`` (its weight dtype is the default compute dtype)."""
        weight = linear.weight.data
        layer = cls(
            linear.in_features, linear.out_features, linear.bias is not None,
            blocksize=blocksize, double_quant=double_quant,
            compute_dtype=compute_dtype or weight.dtype, device=weight.device,
        )
        layer.set_quantized(quantize_nf4(weight, blocksize, double_quant))
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.data)
        return layer

    @property
    def quantized(self) -> NF4Weight:
        """The stored weight as an ``NF4Weight`` (views of the buffers, no copy)."""
        return NF4Weight(
            self.weight_packed, self.weight_absmax, (self.out_features, self.in_features),
            self.blocksize, self.compute_dtype, self.weight_absmax_scale, self.weight_absmax_offset,
        )

    def set_quantized(self, weight: NF4Weight) -> None:
        """Store an ``NF4Weight`` of this layer's shape and format."""
        current = self.quantized
        if weight.shape != current.shape or weight.blocksize != self.blocksize or (
            weight.double_quantized != self.double_quant
        ):
            raise ValueError(
                f"NF4 weight {weight.shape} blocksize {weight.blocksize} double_quant "
                f"{weight.double_quantized} does not fit this layer {current.shape} blocksize "
                f"{self.blocksize} double_quant {self.double_quant}"
            )
        for name, tensor in zip(
            _QUANT_BUFFERS,
            (weight.packed, weight.absmax, weight.absmax_scale, weight.absmax_offset),
            strict=True,
        ):
            if tensor is not None:
                getattr(self, name).copy_(tensor.reshape(getattr(self, name).shape))

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense (out, in) weight, in ``dtype`` (default: the compute dtype)."""
        return dequantize_nf4(self.quantized, dtype or self.compute_dtype)

    def requantize(self, weight: torch.Tensor) -> dict[str, float]:
        """Quantize a dense (out, in) weight into this layer; returns the rounding error added."""
        quantized = quantize_nf4(weight, self.blocksize, self.double_quant)
        self.set_quantized(quantized)
        self.requantization_error = quantization_error(weight, quantized)
        return self.requantization_error

    @property
    def memory_bytes(self) -> int:
        """Bytes the layer really holds: packed codes, absmax statistics and the bias."""
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return self.quantized.nbytes + bias

    def forward_with_lora(
        self, x: torch.Tensor, lora_x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """``self(x) + scale * (lora_x @ A^T) @ B^T`` in one op (no stored float weight)."""
        result = ops.nf4_lora_linear(
            x.to(self.compute_dtype), self.weight_packed, self.quantized.block_absmax(),
            self.out_features, self.blocksize, self.bias, lora_x, lora_a, lora_b, scale,
        )
        return result.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A rank-0 LoRA branch: the same op (and kernel) serves the plain layer.
        empty_a = x.new_empty((0, self.in_features), dtype=self.compute_dtype)
        empty_b = x.new_empty((self.out_features, 0), dtype=self.compute_dtype)
        compute = x.to(self.compute_dtype)
        return self.forward_with_lora(compute, compute, empty_a, empty_b, 0.0).to(x.dtype)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> NF4Linear:
        """Move the packed tensors with the module but never cast them; casts set compute_dtype."""
        kept = {name: self._buffers[name] for name in _QUANT_BUFFERS if self._buffers[name] is not None}
        probe = fn(torch.empty(0, dtype=self.compute_dtype, device=self.weight_packed.device))
        super()._apply(fn, recurse)
        for name, tensor in kept.items():
            self._buffers[name] = tensor.to(probe.device)
        self.compute_dtype = probe.dtype
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, blocksize={self.blocksize}, "
            f"double_quant={self.double_quant}, compute_dtype={self.compute_dtype}"
        )
