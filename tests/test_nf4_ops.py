"""The NF4 ops: schemas, fake and autograd registrations (opcheck), gradients (gradcheck), values."""

from __future__ import annotations

import pytest
import torch

from peftplug import PeftplugError
from peftplug.ops import nf4_dequantize, nf4_lora_linear
from peftplug.ops.nf4 import dequantize_reference
from peftplug.quant import NF4FormatError, quantize_nf4


def _case(m: int, k: int, n: int, r: int, dtype: torch.dtype = torch.float32, bias: bool = True):
    generator = torch.Generator().manual_seed(m * 1000 + k + n + r)
    weight = quantize_nf4(torch.randn(n, k, generator=generator))
    x = torch.randn(m, k, generator=generator, dtype=dtype, requires_grad=True)
    lora_x = torch.randn(m, k, generator=generator, dtype=dtype, requires_grad=True)
    a = torch.randn(r, k, generator=generator, dtype=dtype, requires_grad=True)
    b = torch.randn(n, r, generator=generator, dtype=dtype, requires_grad=True)
    bias_tensor = torch.randn(n, generator=generator, dtype=dtype, requires_grad=True) if bias else None
    return x, weight, n, bias_tensor, lora_x, a, b


def _args(case, scale: float = 0.5) -> tuple:
    x, weight, n, bias, lora_x, a, b = case
    return (x, weight.packed, weight.absmax, n, 64, bias, lora_x, a, b, scale)


SHAPES = [(1, 64, 32, 4), (5, 96, 48, 8), (3, 100, 7, 2)]  # the last: blocks cross rows


@pytest.mark.parametrize("shape", SHAPES)
def test_opcheck_nf4_lora_linear(shape: tuple[int, int, int, int]) -> None:
    torch.library.opcheck(torch.ops.peftplug.nf4_lora_linear.default, _args(_case(*shape)))


@pytest.mark.parametrize("shape", [(32, 64), (7, 100), (3, 5)])
def test_opcheck_nf4_dequantize(shape: tuple[int, int]) -> None:
    weight = quantize_nf4(torch.randn(shape))
    args = (weight.packed, weight.absmax, list(shape), 64, torch.float32)
    torch.library.opcheck(torch.ops.peftplug.nf4_dequantize.default, args)


def test_opcheck_backward_op() -> None:
    _, weight, n, _, lora_x, a, b = _case(4, 64, 32, 4)
    grad = torch.randn(4, n)
    for need_grad_x in (True, False):
        args = (grad, weight.packed, weight.absmax, n, 64, lora_x.detach(), a.detach(), b.detach(), 0.5, need_grad_x)
        torch.library.opcheck(torch.ops.peftplug.nf4_lora_linear_backward.default, args)


def test_dequantize_matches_an_independent_unpacking() -> None:
    weight = quantize_nf4(torch.randn(5, 13))
    codes = torch.tensor([(byte >> shift) & 0xF for byte in weight.packed.tolist() for shift in (4, 0)])
    table = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                          -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                          0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                          0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                          0.7229568362236023, 1.0])
    expected = (table[codes[:65]] * weight.absmax[torch.arange(65) // 64]).reshape(5, 13)
    assert torch.equal(nf4_dequantize(weight.packed, weight.absmax, (5, 13)), expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_match_plain_pytorch(shape: tuple[int, int, int, int]) -> None:
    case = _case(*shape)
    x, weight, n, bias, lora_x, a, b = case
    out = nf4_lora_linear(*_args(case))
    dense = dequantize_reference(weight.packed, weight.absmax, (n, x.shape[1]), 64, torch.float32)
    expected = x @ dense.T + bias + 0.5 * (lora_x @ a.T) @ b.T
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, bias, lora_x, a, b], grad)
    want = torch.autograd.grad(expected, [x, bias, lora_x, a, b], grad)
    for mine, theirs in zip(got, want, strict=True):
        torch.testing.assert_close(mine, theirs)


def test_gradcheck_in_float64() -> None:
    case = _case(3, 64, 16, 4, dtype=torch.float64)
    x, weight, n, bias, lora_x, a, b = case

    def function(x, bias, lora_x, a, b):
        return nf4_lora_linear(x, weight.packed, weight.absmax, n, 64, bias, lora_x, a, b, 0.7)

    assert torch.autograd.gradcheck(function, (x, bias, lora_x, a, b))


def test_the_same_tensor_as_x_and_lora_x_sums_both_gradients() -> None:
    x, weight, n, _, _, a, b = _case(2, 64, 8, 2)
    out = nf4_lora_linear(x, weight.packed, weight.absmax, n, 64, None, x, a, b, 1.0)
    (grad_x,) = torch.autograd.grad(out.sum(), x)
    dense = dequantize_reference(weight.packed, weight.absmax, (n, 64), 64, torch.float32)
    torch.testing.assert_close(grad_x, (dense + b @ a).sum(0).expand(2, 64))


def test_leading_dimensions_are_kept() -> None:
    x, weight, n, bias, lora_x, a, b = _case(6, 64, 8, 2)
    out = nf4_lora_linear(x.view(2, 3, 64), weight.packed, weight.absmax, n, 64, bias, lora_x.view(2, 3, 64), a, b, 1.0)
    assert out.shape == (2, 3, 8)
    torch.testing.assert_close(out.view(6, 8), nf4_lora_linear(*_args(_case(6, 64, 8, 2), 1.0)))


def test_inputs_that_do_not_fit_are_explained() -> None:
    x, weight, n, bias, lora_x, a, b = _case(2, 64, 8, 2)
    with pytest.raises(NF4FormatError, match="bytes but a .9, 64. weight needs"):
        nf4_lora_linear(x, weight.packed, weight.absmax, 9, 64, bias, lora_x, a, b, 1.0)
    with pytest.raises(PeftplugError, match="LoRA A .2, 32. and B"):
        nf4_lora_linear(x, weight.packed, weight.absmax, n, 64, bias, lora_x, a[:, :32], b, 1.0)
    with pytest.raises(NF4FormatError, match="blocksize 100 is not supported"):
        nf4_dequantize(weight.packed, weight.absmax, (8, 64), 100)
