"""The compiled extension: every CPU kernel, on every instruction set this CPU runs, against the
fp64 result of the pure-PyTorch reference within a rounding bound derived from the computation
(``peftplug.testing.float_bounds``); the run-time choice of instruction set; the fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
from peftplug.testing.float_bounds import assert_within, gamma, unit_roundoff

STATUS = ops.extension_status()
compiled = pytest.mark.skipif(not STATUS["loaded"], reason="peftplug._C not built (PEFTPLUG_BUILD_EXT=0)")
SUPPORTED = STATUS["cpu_capabilities"]["supported"] if STATUS["loaded"] else ["default"]
FP32 = torch.float32


@pytest.fixture(params=SUPPORTED)
def capability(request: pytest.FixtureRequest) -> str:
    """Each instruction set this build has and this CPU runs, forced for the test."""
    with ops.cpu_capability(request.param):
        yield request.param


# (rows, in, out, blocksize): the fused path (M <= 16: rows in registers up to 4 and at 8, in
# tiles otherwise) with in-features that are and are not a multiple of 64 (word order), of the
# vector width or of 32, odd ones (rows start mid-byte), blocks smaller than a decoding unit,
# short last blocks; the GEMM path (M > 16).
CASES = [
    (1, 576, 96, 64), (7, 256, 40, 32), (9, 128, 33, 128), (16, 100, 33, 64), (16, 2048, 64, 256),
    (5, 4096, 50, 64), (2, 17, 7, 32), (3, 63, 5, 64), (8, 192, 20, 32), (4, 320, 9, 128),
    (17, 128, 48, 64), (64, 96, 24, 64),
]


def _nf4_inputs(rows: int, k: int, n: int, blocksize: int, r: int, bias: bool, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    weight = quantize_nf4(torch.randn(n, k, generator=generator), blocksize=blocksize)
    x = torch.randn(rows, k, generator=generator)
    lora_x = torch.randn(rows, k, generator=generator)
    a = torch.randn(r, k, generator=generator) * 0.1
    b = torch.randn(n, r, generator=generator) * 0.1
    bias_tensor = torch.randn(n, generator=generator) if bias else None
    return x, weight.packed, weight.absmax, n, blocksize, bias_tensor, lora_x, a, b, 0.5


def _as64(args: tuple) -> tuple:
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _weight64(packed: torch.Tensor, absmax: torch.Tensor, n: int, k: int, blocksize: int) -> torch.Tensor:
    return dequantize_reference(packed, absmax, (n, k), blocksize, torch.float64)


@compiled
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rank", [0, 8])
@pytest.mark.parametrize("case", CASES)
def test_forward_kernel_is_within_the_fp32_rounding_bound(
    capability: str, case: tuple[int, int, int, int], rank: int, bias: bool
) -> None:
    """y = x W^T + b + s (lx A^T) B^T: sums of length K, then r, plus three roundings."""
    args = _nf4_inputs(*case, rank, bias)
    x, packed, absmax, n, blocksize, bias64, lora_x, a, b, scale = _as64(args)
    magnitude = x.abs() @ _weight64(packed, absmax, n, x.shape[-1], blocksize).abs().T
    magnitude += abs(scale) * (lora_x.abs() @ a.abs().T) @ b.abs().T
    if bias64 is not None:
        magnitude += bias64.abs()
    bound = gamma(x.shape[-1] + rank + 3, FP32) * magnitude
    got = torch.ops.peftplug.nf4_lora_linear(*args)
    assert_within(got, lora_linear_reference(*_as64(args)), bound, f"nf4_lora_linear [{capability}]")


@compiled
@pytest.mark.parametrize("need_grad_x", [True, False])
@pytest.mark.parametrize("case", CASES[:4] + CASES[-2:])
def test_backward_kernel_is_within_the_fp32_rounding_bound(
    capability: str, case: tuple[int, int, int, int], need_grad_x: bool
) -> None:
    """Each gradient's bound follows its chain of sums: over N, r, M (rows) or K."""
    rank = 8
    _, packed, absmax, n, blocksize, _, lora_x, a, b, scale = _nf4_inputs(*case, rank, False)
    grad = torch.randn(case[0], n, generator=torch.Generator().manual_seed(1))
    args = (grad, packed, absmax, n, blocksize, lora_x, a, b, scale, need_grad_x)
    got = torch.ops.peftplug.nf4_lora_linear_backward(*args)
    exact = lora_linear_backward_reference(*_as64(args))
    g, x, a64, b64 = grad.double().abs(), lora_x.double().abs(), a.double().abs(), b.double().abs()
    rows, k = x.shape
    hidden = scale * g @ b64  # |s dY B|
    bounds = [
        gamma(n + 2, FP32) * (g @ _weight64(packed, absmax, n, k, blocksize).abs()),
        gamma(n + rank + 3, FP32) * (hidden @ a64),
        gamma(n + rows + 3, FP32) * (hidden.T @ x),
        gamma(k + rows + 3, FP32) * (scale * g.T @ (x @ a64.T)),
    ]
    names = ["grad_x", "grad_lora_x", "grad_lora_a", "grad_lora_b"]
    for mine, truth, bound, name in zip(got, exact, bounds, names, strict=True):
        if name == "grad_x" and not need_grad_x:
            assert mine.numel() == 0 and truth.numel() == 0
            continue
        assert_within(mine, truth, bound, f"{name} [{capability}]")


@compiled
@pytest.mark.parametrize("shape", [(96, 576), (33, 100), (3, 5), (7, 17)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize_kernel_equals_the_reference_exactly(
    capability: str, shape: tuple[int, int], dtype: torch.dtype
) -> None:
    """Each weight is one fp32 product, code value times absmax: identical on every path."""
    weight = quantize_nf4(torch.randn(shape), blocksize=32)
    got = torch.ops.peftplug.nf4_dequantize(weight.packed, weight.absmax, list(shape), 32, dtype)
    assert torch.equal(got, dequantize_reference(weight.packed, weight.absmax, shape, 32, dtype))


@compiled
def test_the_cpu_kernels_are_registered_and_reported() -> None:
    for name in ("nf4_dequantize", "nf4_lora_linear", "nf4_lora_linear_backward",
                 "prefix_attention", "prefix_attention_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"peftplug::{name}", "CPU")
        assert f"{name}:cpu" in STATUS["kernels"]
    assert STATUS["torch"] == torch.__version__.split("+")[0]


# The run-time choice of instruction set ------------------------------------------------------
X86_PATHS = {  # what each path needs of the CPU, in /proc/cpuinfo's words (setup.py's flags)
    "avx512": {"avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512dq"},
    "avx2": {"avx2", "fma", "f16c", "bmi2"},
}


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    line = next(line for line in text.splitlines() if line.startswith(("flags", "Features")))
    return set(line.split(":", 1)[1].split())


def _capabilities_in_a_fresh_process(choice: str | None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PEFTPLUG_CPU_CAPABILITY"}
    if choice is not None:
        environment["PEFTPLUG_CPU_CAPABILITY"] = choice
    script = "import json, peftplug.ops as o; print(json.dumps(o.extension_status()['cpu_capabilities']))"
    return subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True,
                          text=True, timeout=300, check=False)


@compiled
@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU's flags from /proc/cpuinfo")
def test_the_best_path_this_cpu_runs_is_chosen() -> None:
    """Checked against /proc/cpuinfo: on an AVX2 CPU without AVX-512 that is the AVX2 path."""
    compiled_paths = STATUS["cpu_capabilities"]["compiled"]
    flags = _cpu_flags()
    runnable = [name for name, needs in X86_PATHS.items() if name in compiled_paths and needs <= flags]
    assert SUPPORTED == ["default", *reversed(runnable)]
    result = _capabilities_in_a_fresh_process(None)
    assert result.returncode == 0, result.stderr[-2000:]
    chosen = json.loads(result.stdout)["active"]
    assert chosen == (runnable[0] if runnable else "default")
    if "avx2" in compiled_paths and X86_PATHS["avx2"] <= flags and "avx512f" not in flags:
        assert chosen == "avx2", "a vector path, not the default, on an AVX2 CPU without AVX-512"


@compiled
@pytest.mark.parametrize("choice", SUPPORTED)
def test_the_environment_variable_forces_each_supported_path(choice: str) -> None:
    result = _capabilities_in_a_fresh_process(choice)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["active"] == choice


@compiled
def test_an_unknown_or_unrunnable_path_is_a_clear_error() -> None:
    result = _capabilities_in_a_fresh_process("sse9")
    assert result.returncode != 0
    assert "PEFTPLUG_CPU_CAPABILITY=sse9" in result.stderr and "default" in result.stderr
    with pytest.raises(ops.CpuCapabilityError, match="does not have"), ops.cpu_capability("sse9"):
        pass
    unrunnable = [name for name in STATUS["cpu_capabilities"]["compiled"] if name not in SUPPORTED]
    for name in unrunnable:
        with pytest.raises(ops.CpuCapabilityError, match="cannot run"), ops.cpu_capability(name):
            pass
    assert ops.extension_status()["cpu_capabilities"]["active"] == STATUS["cpu_capabilities"]["active"]


# Prefix attention ----------------------------------------------------------------------------
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


def _flash_rule(got: torch.Tensor, torch_low: torch.Tensor, exact: torch.Tensor) -> None:
    """flash-attention's rule for a low-precision kernel: at most ~2x PyTorch's own error there."""
    kernel_error = (got.double() - exact).abs().max().item()
    torch_error = (torch_low.double() - exact).abs().max().item()
    assert kernel_error <= 2 * torch_error + 1e-6, (kernel_error, torch_error)


def _attention_bounds(inputs: tuple, is_causal: bool, scale: float, grad: torch.Tensor) -> dict:
    """fp32 rounding bounds of prefix attention's outputs and gradients, from fp64 magnitudes.

    Scores carry at most (D + 2) u of scale |q||k| (+ the mask); softmax turns a score error
    of delta into a relative probability error of 2 delta, plus (N + 4) u for the exponentials
    and the normalising sum over N = P + L keys. Every later sum of length n adds gamma_n of
    its magnitude (P |V| for the output, P (|dO||V|^T + sum |dO| P|V|) for the score
    gradients). A factor 2 covers the second-order terms.
    """
    q, k, v, pk, pv, mask = (t.double() if t is not None and t.is_floating_point() else t for t in inputs)
    batch, heads, length, dim = q.shape
    kv_heads, prefix = k.shape[1], pk.shape[1]
    groups, keys = heads // kv_heads, prefix + length
    u = unit_roundoff(FP32)
    eye = torch.eye(keys, dtype=torch.float64)
    probs, lse = prefix_attention_reference(  # attention weights over [prefix; keys]: one-hot values
        q, k, eye[prefix:].expand(batch, kv_heads, length, keys), pk, eye[:prefix].expand(kv_heads, prefix, keys),
        mask, is_causal, scale, 0.0, 0,
    )

    def per_query_head(prefix_part: torch.Tensor, key_part: torch.Tensor) -> torch.Tensor:
        whole = torch.cat([prefix_part.expand(batch, -1, -1, -1), key_part], dim=2)
        return whole.abs().repeat_interleave(groups, dim=1)  # [B, Hq, N, D]

    keys_abs, values_abs = per_query_head(pk, k), per_query_head(pv, v)
    score_magnitude = scale * q.abs() @ keys_abs.transpose(-1, -2)
    if mask is not None and mask.dtype != torch.bool:
        added = torch.where(torch.isfinite(mask), mask.abs(), 0.0).expand(batch, heads, length, length)
        score_magnitude = score_magnitude + torch.nn.functional.pad(added, (prefix, 0))
    delta = ((dim + 2) * u * score_magnitude * (probs > 0)).max().item()
    relative_probs = 2 * delta + (keys + 4) * u
    relative_score_grads = relative_probs + (dim + 3) * u
    out_magnitude = probs @ values_abs
    g = grad.double().abs()
    score_grad_magnitude = scale * probs * (g @ values_abs.transpose(-1, -2) + (g * out_magnitude).sum(-1, keepdim=True))

    def per_kv_head(per_query: torch.Tensor) -> torch.Tensor:
        return per_query.view(batch, kv_heads, groups, keys, -1).sum(2)

    key_grads = per_kv_head(score_grad_magnitude.transpose(-1, -2) @ q.abs())
    value_grads = per_kv_head(probs.transpose(-1, -2) @ g)
    over_rows, over_batch = gamma(groups * length + 1, FP32), gamma(batch * groups * length + 1, FP32)
    return {
        "out": 2 * (relative_probs + gamma(keys + 1, FP32)) * out_magnitude,
        "logsumexp": 2 * (delta + (keys + 4) * u + u * torch.where(torch.isfinite(lse), lse.abs(), 0.0)),
        "grad_query": 2 * (relative_score_grads + gamma(keys + 1, FP32)) * (score_grad_magnitude @ keys_abs),
        "grad_key": 2 * (relative_score_grads + over_rows) * key_grads[:, :, prefix:],
        "grad_value": 2 * (relative_probs + over_rows) * value_grads[:, :, prefix:],
        "grad_prefix_key": 2 * (relative_score_grads + over_batch) * key_grads[:, :, :prefix].sum(0),
        "grad_prefix_value": 2 * (relative_probs + over_batch) * value_grads[:, :, :prefix].sum(0),
    }


@compiled
@pytest.mark.parametrize("mask_kind", ["none", "padding", "additive"])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefix_attention_kernel_matches_the_reference(
    dtype: torch.dtype, is_causal: bool, mask_kind: str
) -> None:
    """The flash-plus-merge CPU kernel against fp64, forward and backward."""
    inputs = _prefix_inputs(dtype, mask_kind)
    args = (*inputs, is_causal, 0.25, 0.0, 0)
    exact_args = _as64(args)
    out, logsumexp = torch.ops.peftplug.prefix_attention(*args)
    exact_out, exact_lse = prefix_attention_reference(*exact_args)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got = torch.ops.peftplug.prefix_attention_backward(grad, *args, out, logsumexp)
    exact = prefix_attention_backward_reference(grad.double(), *exact_args, exact_out, exact_lse)
    names = ["grad_query", "grad_key", "grad_value", "grad_prefix_key", "grad_prefix_value"]
    if dtype == torch.float32:
        bounds = _attention_bounds(inputs, is_causal, 0.25, grad)
        assert_within(out, exact_out, bounds["out"], "out")
        assert_within(logsumexp, exact_lse, bounds["logsumexp"], "logsumexp")
        for mine, truth, name in zip(got, exact, names, strict=True):
            assert_within(mine, truth, bounds[name], name)
        return
    reference_out, reference_lse = prefix_attention_reference(*args)
    _flash_rule(out, reference_out, exact_out)
    # the log-sum-exp stays fp32, but a bf16 kernel's scores are only bf16-accurate
    _flash_rule(logsumexp, reference_lse.to(dtype), exact_lse)
    for mine, truth in zip(got, exact, strict=True):
        assert torch.isfinite(mine).all()
        # bf16 flash backward rounds its inputs: hold it to bf16's own precision
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
