"""The CUDA kernels against the fp32 reference (run only where a GPU and the built extension are).

Tolerance follows flash-attention's rule: a kernel's error against the fp32 reference may be
at most twice the error of the same computation done by PyTorch in the low precision, plus a
small floor. Dequantized weights must equal bitsandbytes' bit for bit.

``PEFTPLUG_TEST_DEVICE=cpu`` runs the same tests on the CPU: the rehearsal of the GPU
run (``benchmarks/gpu/run.sh --dry-run``) runs them against the references
(``PEFTPLUG_USE_EXT=0``), to check that this file runs at all.
"""

from __future__ import annotations

import os

import pytest
import torch

import peftplug.ops  # noqa: F401  (registers the ops; loads the extension when built)
from peftplug.ops import extension_status
from peftplug.ops.nf4 import dequantize_reference, lora_linear_reference
from peftplug.ops.prefix_attention import prefix_attention_reference
from peftplug.quant import quantize_nf4

DEVICE = os.environ.get("PEFTPLUG_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not (torch.cuda.is_available() and extension_status().get("cuda")),
    reason="needs a GPU and the extension built with CUDA",
)
LOW_PRECISION = (torch.float16, torch.bfloat16)


def assert_within_flash_rule(
    result: torch.Tensor, low_precision: torch.Tensor, exact: torch.Tensor
) -> None:
    """|result - exact| <= 2 * |low_precision - exact| + 1e-3 (elementwise maximum)."""
    ours = (result.float() - exact.float()).abs().max().item()
    theirs = (low_precision.float() - exact.float()).abs().max().item()
    assert ours <= 2 * theirs + 1e-3, f"kernel error {ours:.3g}, PyTorch's {theirs:.3g}"


def nf4_weight(out_features: int, in_features: int) -> tuple:
    weight = torch.randn(out_features, in_features, device=DEVICE) * 0.02
    quantized = quantize_nf4(weight)
    return quantized.packed, quantized.block_absmax()


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
def test_dequantize_equals_the_reference_bit_for_bit(dtype: torch.dtype) -> None:
    packed, absmax = nf4_weight(576, 1536)
    ours = torch.ops.peftplug.nf4_dequantize(packed, absmax, [576, 1536], 64, dtype)
    expected = dequantize_reference(packed.cpu(), absmax.cpu(), (576, 1536), 64, dtype)
    assert torch.equal(ours.cpu(), expected)


def test_dequantize_equals_bitsandbytes() -> None:
    functional = pytest.importorskip("bitsandbytes.functional")
    weight = torch.randn(4096, 1024, device=DEVICE, dtype=torch.bfloat16)
    packed, state = functional.quantize_4bit(weight, quant_type="nf4", compress_statistics=False)
    theirs = functional.dequantize_4bit(packed, state)
    ours = torch.ops.peftplug.nf4_dequantize(
        packed.view(torch.uint8).reshape(-1), state.absmax.float(), [4096, 1024], 64,
        torch.bfloat16,
    )
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("rows", [1, 7, 16, 300])
@pytest.mark.parametrize("shape", [(576, 1536), (2048, 2048), (1000, 4096)])
def test_nf4_lora_linear_forward_and_backward(
    dtype: torch.dtype, rows: int, shape: tuple[int, int]
) -> None:
    out_features, in_features = shape
    packed, absmax = nf4_weight(out_features, in_features)
    x = torch.randn(rows, in_features, device=DEVICE, dtype=dtype, requires_grad=True)
    lora_a = (torch.randn(16, in_features, device=DEVICE) * 0.01).requires_grad_()
    lora_b = (torch.randn(out_features, 16, device=DEVICE) * 0.01).requires_grad_()
    bias = torch.randn(out_features, device=DEVICE, dtype=dtype)
    lora_x = x.to(lora_a.dtype)  # the op's contract: the LoRA branch's input in the adapter's dtype
    ours = torch.ops.peftplug.nf4_lora_linear(
        x, packed, absmax, out_features, 64, bias, lora_x, lora_a, lora_b, 2.0
    )
    exact_x = x.detach().float().requires_grad_()  # fp32 leaf: its gradient is not rounded
    exact = lora_linear_reference(exact_x, packed, absmax, out_features, 64, bias.float(),
                                  exact_x, lora_a, lora_b, 2.0)
    low = lora_linear_reference(x, packed, absmax, out_features, 64, bias, lora_x, lora_a, lora_b,
                                2.0)
    assert_within_flash_rule(ours, low, exact)
    grad = torch.randn_like(ours)
    ours_grads = torch.autograd.grad(ours, (x, lora_a, lora_b), grad)
    exact_grads = torch.autograd.grad(exact, (exact_x, lora_a, lora_b), grad.float())
    low_grads = torch.autograd.grad(low, (x, lora_a, lora_b), grad)
    for mine, theirs, reference in zip(ours_grads, low_grads, exact_grads, strict=True):
        assert_within_flash_rule(mine, theirs, reference)


def test_nf4_ops_pass_opcheck() -> None:
    packed, absmax = nf4_weight(256, 512)
    x = torch.randn(4, 512, device=DEVICE, dtype=torch.bfloat16)
    lora_a = torch.randn(8, 512, device=DEVICE, requires_grad=True)
    lora_b = torch.randn(256, 8, device=DEVICE, requires_grad=True)
    torch.library.opcheck(
        torch.ops.peftplug.nf4_dequantize.default, (packed, absmax, [256, 512], 64, torch.bfloat16)
    )
    torch.library.opcheck(
        torch.ops.peftplug.nf4_lora_linear.default,
        (x, packed, absmax, 256, 64, None, x.float(), lora_a, lora_b, 0.5),
    )


def attention_in_input_dtype(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix_key: torch.Tensor,
    prefix_value: torch.Tensor, causal: bool, scale: float,
) -> torch.Tensor:
    """Softmax over [prefix; keys] by plain PyTorch ops in the inputs' dtype: the products round
    to it, the softmax runs in fp32 (flash-attention's own low-precision reference)."""
    batch, heads, length, _ = query.shape
    groups = heads // key.shape[1]
    keys = torch.cat([prefix_key.expand(batch, -1, -1, -1), key], 2).repeat_interleave(groups, 1)
    values = torch.cat([prefix_value.expand(batch, -1, -1, -1), value], 2).repeat_interleave(
        groups, 1
    )
    scores = (query @ keys.transpose(-1, -2)) * scale
    if causal:  # every query sees the whole prefix and the keys up to its own position
        hidden = torch.ones(length, length, dtype=torch.bool, device=query.device).triu(1)
        scores = scores.masked_fill(
            torch.cat([hidden.new_zeros(length, prefix_key.shape[1]), hidden], 1), float("-inf")
        )
    probs = scores.float().softmax(-1).to(query.dtype)
    return probs @ values


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("kv_heads", [8, 32])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_prefix_attention_forward_and_backward(
    dtype: torch.dtype, kv_heads: int, head_dim: int, causal: bool
) -> None:
    batch, heads, length, prefix = 2, 32, 256, 20
    options = {"device": DEVICE, "dtype": dtype, "requires_grad": True}
    query = torch.randn(batch, heads, length, head_dim, **options)
    key = torch.randn(batch, kv_heads, length, head_dim, **options)
    value = torch.randn(batch, kv_heads, length, head_dim, **options)
    prefix_key = torch.randn(kv_heads, prefix, head_dim, **options)
    prefix_value = torch.randn(kv_heads, prefix, head_dim, **options)
    inputs = (query, key, value, prefix_key, prefix_value)
    exact_inputs = tuple(t.detach().float().requires_grad_() for t in inputs)
    scale = head_dim**-0.5
    ours, _ = torch.ops.peftplug.prefix_attention(*inputs, None, causal, scale, 0.0, 0)
    exact, _ = prefix_attention_reference(*exact_inputs, None, causal, scale, 0.0, 0)
    low = attention_in_input_dtype(*inputs, causal, scale)
    assert_within_flash_rule(ours, low, exact)
    grad = torch.randn_like(ours)
    ours_grads = torch.autograd.grad(ours, inputs, grad)
    exact_grads = torch.autograd.grad(exact, exact_inputs, grad.float())
    low_grads = torch.autograd.grad(low, inputs, grad)
    for mine, theirs, reference in zip(ours_grads, low_grads, exact_grads, strict=True):
        assert_within_flash_rule(mine, theirs, reference)
