"""NF4 ops: schemas, pure-PyTorch reference kernels, fake kernels and autograd.

The references are registered as ``CompositeExplicitAutograd``, so they run on every device
that has no compiled kernel; the C++ extension registers faster CPU kernels for the same
schemas with ``TORCH_LIBRARY_IMPL``. The references are also the oracle in tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from peftplug.errors import PeftplugError
from peftplug.nf4_format import check_packed, nf4_code

_library = torch.library.Library("peftplug", "FRAGMENT")
_library.define(
    "nf4_dequantize(Tensor packed, Tensor absmax, SymInt[] shape, int blocksize, "
    "ScalarType dtype) -> Tensor"
)
_library.define(
    "nf4_lora_linear(Tensor x, Tensor packed, Tensor absmax, SymInt out_features, int blocksize, "
    "Tensor? bias, Tensor lora_x, Tensor lora_a, Tensor lora_b, float scale) -> Tensor"
)
_library.define(
    "nf4_lora_linear_backward(Tensor grad_out, Tensor packed, Tensor absmax, SymInt out_features, "
    "int blocksize, Tensor lora_x, Tensor lora_a, Tensor lora_b, float scale, bool need_grad_x) "
    "-> (Tensor grad_x, Tensor grad_lora_x, Tensor grad_lora_a, Tensor grad_lora_b)"
)


# Reference kernels -----------------------------------------------------------------------
def dequantize_reference(
    packed: torch.Tensor, absmax: torch.Tensor, shape: Sequence[int], blocksize: int, dtype: torch.dtype
) -> torch.Tensor:
    """Unpack both nibbles (high first), look the codes up, scale each block by its absmax."""
    numel = math.prod(shape)
    flat = packed.reshape(-1)
    indices = torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1)[:numel].long()
    values = nf4_code(packed.device)[indices]
    blocks = absmax.numel()
    values = F.pad(values, (0, blocks * blocksize - numel))
    scaled = values.view(blocks, blocksize) * absmax.float().view(-1, 1)
    return scaled.reshape(-1)[:numel].reshape(tuple(shape)).to(dtype)


def _lora_update(lora_x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    return F.linear(F.linear(lora_x, lora_a), lora_b)


def lora_linear_reference(
    x: torch.Tensor,
    packed: torch.Tensor,
    absmax: torch.Tensor,
    out_features: int,
    blocksize: int,
    bias: torch.Tensor | None,
    lora_x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """``x @ deq(W)^T (+ bias) + scale * (lora_x @ A^T) @ B^T`` with the full dequantized W."""
    weight = dequantize_reference(packed, absmax, (out_features, x.shape[-1]), blocksize, x.dtype)
    result = F.linear(x, weight, bias)
    update = _lora_update(lora_x, lora_a, lora_b) * scale
    return result + update.to(result.dtype)


def lora_linear_backward_reference(
    grad_out: torch.Tensor,
    packed: torch.Tensor,
    absmax: torch.Tensor,
    out_features: int,
    blocksize: int,
    lora_x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: float,
    need_grad_x: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for x (base path only), lora_x, A and B; the frozen weight gets none."""
    in_features = lora_x.shape[-1]
    if need_grad_x:
        weight = dequantize_reference(
            packed, absmax, (out_features, in_features), blocksize, grad_out.dtype
        )
        grad_x = grad_out @ weight
    else:
        grad_x = grad_out.new_empty(0)
    grad = grad_out.reshape(-1, out_features).to(lora_b.dtype) * scale
    inputs = lora_x.reshape(-1, in_features)
    grad_hidden = grad @ lora_b
    grad_lora_b = grad.T @ F.linear(inputs, lora_a)
    grad_lora_a = grad_hidden.T @ inputs
    grad_lora_x = (grad_hidden @ lora_a).reshape(lora_x.shape)
    return grad_x, grad_lora_x, grad_lora_a, grad_lora_b


_library.impl("nf4_dequantize", dequantize_reference, "CompositeExplicitAutograd")
_library.impl("nf4_lora_linear", lora_linear_reference, "CompositeExplicitAutograd")
_library.impl(
    "nf4_lora_linear_backward", lora_linear_backward_reference, "CompositeExplicitAutograd"
)


# Fake kernels (shapes and dtypes only) -----------------------------------------------------
@torch.library.register_fake("peftplug::nf4_dequantize", lib=_library)
def _dequantize_fake(packed, absmax, shape, blocksize, dtype):
    return packed.new_empty(tuple(shape), dtype=dtype)


@torch.library.register_fake("peftplug::nf4_lora_linear", lib=_library)
def _lora_linear_fake(x, packed, absmax, out_features, blocksize, bias, lora_x, lora_a, lora_b, scale):
    return x.new_empty((*x.shape[:-1], out_features))


@torch.library.register_fake("peftplug::nf4_lora_linear_backward", lib=_library)
def _lora_linear_backward_fake(grad_out, packed, absmax, out_features, blocksize, lora_x, lora_a, lora_b, scale, need_grad_x):
    grad_x = (
        grad_out.new_empty((*grad_out.shape[:-1], lora_x.shape[-1]))
        if need_grad_x
        else grad_out.new_empty(0)
    )
    return grad_x, torch.empty_like(lora_x), torch.empty_like(lora_a), torch.empty_like(lora_b)


# Autograd ------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output) -> None:
    x, packed, absmax, out_features, blocksize, bias, lora_x, lora_a, lora_b, scale = inputs
    ctx.save_for_backward(packed, absmax, lora_x, lora_a, lora_b)
    ctx.out_features, ctx.blocksize, ctx.scale = out_features, blocksize, scale
    ctx.bias_dims = None if bias is None else tuple(range(x.dim() - 1))


def _backward(ctx, grad_out):
    packed, absmax, lora_x, lora_a, lora_b = ctx.saved_tensors
    need = ctx.needs_input_grad
    grad_x, grad_lora_x, grad_a, grad_b = torch.ops.peftplug.nf4_lora_linear_backward(
        grad_out.contiguous(), packed, absmax, ctx.out_features, ctx.blocksize,
        lora_x, lora_a, lora_b, ctx.scale, need[0],
    )
    grad_bias = grad_out.sum(ctx.bias_dims) if need[5] else None
    return (
        grad_x if need[0] else None, None, None, None, None, grad_bias,
        grad_lora_x if need[6] else None,
        grad_a if need[7] else None,
        grad_b if need[8] else None,
        None,
    )


torch.library.register_autograd(
    "peftplug::nf4_lora_linear", _backward, setup_context=_setup_context, lib=_library
)


# Checked entry points ---------------------------------------------------------------------------
def nf4_dequantize(
    packed: torch.Tensor, absmax: torch.Tensor, shape: Sequence[int], blocksize: int = 64,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The float ``shape`` weight that packed NF4 data and its float32 absmax stand for."""
    check_packed(packed, absmax, tuple(shape), blocksize)
    return torch.ops.peftplug.nf4_dequantize(packed, absmax, list(shape), blocksize, dtype)


def nf4_lora_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    absmax: torch.Tensor,
    out_features: int,
    blocksize: int,
    bias: torch.Tensor | None,
    lora_x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """``x @ deq(W)^T (+ bias) + scale * (lora_x @ A^T) @ B^T`` without a stored float W.

    ``lora_x`` is the LoRA branch's input (``x`` after dropout, in the adapter's dtype).
    """
    in_features = x.shape[-1]
    check_packed(packed, absmax, (out_features, in_features), blocksize)
    rank = lora_a.shape[0]
    if lora_a.shape != (rank, in_features) or lora_b.shape != (out_features, rank):
        raise PeftplugError(
            f"LoRA A {tuple(lora_a.shape)} and B {tuple(lora_b.shape)} do not fit a "
            f"({out_features}, {in_features}) weight: A must be (r, {in_features}) and B "
            f"({out_features}, r)"
        )
    if lora_x.shape != x.shape:
        raise PeftplugError(
            f"lora_x {tuple(lora_x.shape)} must have the shape of x {tuple(x.shape)}"
        )
    return torch.ops.peftplug.nf4_lora_linear(
        x, packed, absmax, out_features, blocksize, bias, lora_x, lora_a, lora_b, scale
    )
