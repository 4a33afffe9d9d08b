"""The compiled extension: each CPU kernel against the pure-PyTorch reference, build info, fallback."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from peftplug import ops
from peftplug.ops.nf4 import (
    dequantize_reference,
    lora_linear_backward_reference,
    lora_linear_reference,
)
from peftplug.ops.prefix_attention import (
    prefix_attention_backward_reference,
    prefix_attention_reference,
)
from peftplug.quant import quantize_nf4

compiled = pytest.mark.skipif(
    not ops.extension_status()["loaded"], reason="peftplug._C not built (PEFTPLUG_BUILD_EXT=0)"
)

# (rows, in, out): fused small-M path with and without a 16-multiple K, GEMM path, odd sizes.
CASES = [
    (1, 576, 96), (7, 256, 40), (9, 128, 33), (16, 100, 33), (16, 2048, 64), (17, 128, 48), (64, 96, 24), (3, 63, 5),
]


def _inputs(rows: int, k: int, n: int, r: int, bias: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    weight = quantize_nf4(torch.randn(n, k, generator=generator))
    x = torch.randn(rows, k, generator=generator)
    lora_x = torch.randn(rows, k, generator=generator)
    a = torch.randn(r, k, generator=generator) * 0.1
    b = torch.randn(n, r, generator=generator) * 0.1
    bias_tensor = torch.randn(n, generator=generator) if bias else None
    return x, weight.packed, weight.absmax, n, 64, bias_tensor, lora_x, a, b, 0.5


def _as64(args: tuple) -> tuple:
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _assert_within_twice_pytorch_error(got: torch.Tensor, torch_fp32: torch.Tensor, exact: torch.Tensor) -> None:
    """flash-attention's rule: the kernel's error may be at most ~2x PyTorch's own fp32 error."""
    kernel_error = (got.double() - exact).abs().max().item()
    torch_error = (torch_fp32.double() - exact).abs().max().item()
    assert kernel_error <= 2 * torch_error + 1e-6, (kernel_error, torch_error)


@compiled
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rank", [0, 8])
@pytest.mark.parametrize("case", CASES)
def test_forward_kernel_matches_the_reference(case: tuple[int, int, int], rank: int, bias: bool) -> None:
    args = _inputs(*case, rank, bias)
    got = torch.ops.peftplug.nf4_lora_linear(*args)
    _assert_within_twice_pytorch_error(got, lora_linear_reference(*args), lora_linear_reference(*_as64(args)))


@compiled
@pytest.mark.parametrize("need_grad_x", [True, False])
@pytest.mark.parametrize("case", CASES[:4] + CASES[-2:])
def test_backward_kernel_matches_the_reference(case: tuple[int, int, int], need_grad_x: bool) -> None:
    _, packed, absmax, n, blocksize, _, lora_x, a, b, scale = _inputs(*case, 8, False)
    grad = torch.randn(case[0], n, generator=torch.Generator().manual_seed(1))
    args = (grad, packed, absmax, n, blocksize, lora_x, a, b, scale, need_grad_x)
    got = torch.ops.peftplug.nf4_lora_linear_backward(*args)
    reference = lora_linear_backward_reference(*args)
    exact = lora_linear_backward_reference(*_as64(args))
    for mine, theirs, truth in zip(got, reference, exact, strict=True):
        assert mine.shape == theirs.shape
        if mine.numel():
            _assert_within_twice_pytorch_error(mine, theirs, truth)


@compiled
@pytest.mark.parametrize("shape", [(96, 576), (33, 100), (3, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize_kernel_equals_the_reference_exactly(shape: tuple[int, int], dtype: torch.dtype) -> None:
    weight = quantize_nf4(torch.randn(shape))
    got = torch.ops.peftplug.nf4_dequantize(weight.packed, weight.absmax, list(shape), 64, dtype)
    assert torch.equal(got, dequantize_reference(weight.packed, weight.absmax, shape, 64, dtype))


@compiled
def test_the_cpu_kernels_are_registered_and_reported() -> None:
    status = ops.extension_status()
    for name in ("nf4_dequantize", "nf4_lora_linear", "nf4_lora_linear_backward",
                 "prefix_attention", "prefix_attention_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"peftplug::{name}", "CPU")
        assert f"{name}:cpu" in status["kernels"]
    assert status["torch"] == torch.__version__.split("+")[0]


def _prefix_inputs(dtype: torch.dtype, mask_kind: str, length: int = 37) -> tuple:
    """GQA (6 query, 2 key/value heads), prefix 5; a left-padded example blind to every key."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(2, 6, length, 16), (2, 2, length, 16), (2, 2, length, 16), (2, 5, 16), (2, 5, 16)]
    tensors = [torch.randn(*shape, generator=generator).to(dtype) for shape in shapes]
    mask = None
    if mask_kind == "padding":
        mask = torch.ones(2, 1, length, length, dtype=torch.bool)
        mask[1, ..., :7] = False
    elif mask_kind == "additive":
        mask = torch.randn(2, 6, length, length, generator=generator).to(dtype) * 0.1
        mask[0, ..., -3:] = float("-inf")
    return (*tensors, mask)


@compiled
@pytest.mark.parametrize("mask_kind", ["none", "padding", "additive"])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefix_attention_kernel_matches_the_reference(
    dtype: torch.dtype, is_causal: bool, mask_kind: str
) -> None:
    """The flash-plus-merge CPU kernel against the reference, forward and backward."""
    inputs = _prefix_inputs(dtype, mask_kind)
    args = (*inputs, is_causal, 0.25, 0.0, 0)
    exact_args = _as64(args)
    out, logsumexp = torch.ops.peftplug.prefix_attention(*args)
    reference_out, reference_lse = prefix_attention_reference(*args)
    exact_out, exact_lse = prefix_attention_reference(*exact_args)
    _assert_within_twice_pytorch_error(out, reference_out, exact_out)
    # the log-sum-exp stays fp32, but a bf16 kernel's scores are only bf16-accurate
    _assert_within_twice_pytorch_error(logsumexp, reference_lse.to(dtype), exact_lse)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got = torch.ops.peftplug.prefix_attention_backward(grad, *args, out, logsumexp)
    reference = prefix_attention_backward_reference(grad, *args, reference_out, reference_lse)
    exact = prefix_attention_backward_reference(grad.double(), *exact_args, exact_out, exact_lse)
    for mine, theirs, truth in zip(got, reference, exact, strict=True):
        assert torch.isfinite(mine).all()
        if dtype == torch.float32:
            _assert_within_twice_pytorch_error(mine, theirs, truth)
        else:  # bf16 flash backward rounds its inputs: hold it to bf16's own precision
            torch.testing.assert_close(mine.double(), truth, rtol=2e-2, atol=2e-2)


@compiled
def test_prefix_attention_dropout_runs_the_seeded_reference() -> None:
    args = (*_prefix_inputs(torch.float32, "none"), True, 0.25, 0.3, 7)
    for got, expected in zip(torch.ops.peftplug.prefix_attention(*args),
                             prefix_attention_reference(*args), strict=True):
        assert torch.equal(got, expected)


def test_without_the_extension_the_reference_runs_and_the_reason_is_recorded() -> None:
    script = textwrap.dedent(
        """
        import sys, torch
        sys.modules["peftplug._C"] = None  # as if PEFTPLUG_BUILD_EXT=0
        from peftplug import ops
        from peftplug.quant import NF4Linear, dequantize_nf4, quantize_nf4
        status = ops.extension_status()
        assert not status["loaded"] and "not built" in status["reason"], status
        assert not torch._C._dispatch_has_kernel_for_dispatch_key("peftplug::nf4_lora_linear", "CPU")
        linear = torch.nn.Linear(96, 8)
        layer = NF4Linear.from_linear(linear)
        x = torch.randn(2, 96)
        expected = torch.nn.functional.linear(x, dequantize_nf4(quantize_nf4(linear.weight.data)), linear.bias)
        torch.testing.assert_close(layer(x), expected)
        print("reference ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert "reference ok" in result.stdout, result.stderr[-2000:]
