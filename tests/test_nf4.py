"""NF4 format: the code table, packing, error bound, bad input, and bit-compatibility with bitsandbytes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from peftplug.nf4_format import NF4_ZERO_INDEX
from peftplug.quant import (
    NF4_CODE_VALUES,
    NF4FormatError,
    NF4Weight,
    dequantize_nf4,
    dynamic_code,
    from_bitsandbytes,
    quantize_nf4,
    to_bitsandbytes,
)

SHAPES = [(7, 9), (64, 128), (33, 65), (300, 77), (96, 576)]


def test_code_table_is_the_qlora_papers() -> None:
    # Appendix E of the QLoRA paper, to 4 decimals; then the exact float32 values it rounds.
    paper = [-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
             0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0]
    assert [round(v, 4) for v in NF4_CODE_VALUES] == paper
    assert NF4_CODE_VALUES[NF4_ZERO_INDEX] == 0.0
    assert list(NF4_CODE_VALUES) == sorted(NF4_CODE_VALUES)


def test_two_codes_per_byte_high_nibble_first() -> None:
    # One block: absmax 1, values exactly on code points 15, 0, 7, 8, 3 (odd: one padding nibble).
    values = torch.tensor([1.0, -1.0, 0.0, NF4_CODE_VALUES[8], NF4_CODE_VALUES[3]])
    quantized = quantize_nf4(values)
    assert quantized.packed.tolist() == [0xF0, 0x78, 0x37]
    assert quantized.absmax.tolist() == [1.0]
    torch.testing.assert_close(dequantize_nf4(quantized), values, rtol=0, atol=0)


def test_each_block_has_its_own_absmax_and_a_short_last_block_is_kept() -> None:
    weight = torch.arange(1, 151, dtype=torch.float32).reshape(3, 50)  # 150 = 2 blocks + 22
    quantized = quantize_nf4(weight)
    assert quantized.absmax.tolist() == [64.0, 128.0, 150.0]
    assert quantized.packed.numel() == 75


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_error_is_within_half_the_widest_code_gap(shape: tuple[int, int]) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    quantized = quantize_nf4(weight)
    restored = dequantize_nf4(quantized)
    widest_gap = max(b - a for a, b in itertools.pairwise(NF4_CODE_VALUES))
    flat = torch.nn.functional.pad(weight.reshape(-1), (0, (-weight.numel()) % 64))
    block_max = flat.view(-1, 64).abs().amax(1).repeat_interleave(64)[: weight.numel()]
    error = (restored - weight).abs().reshape(-1)
    assert bool((error <= block_max * widest_gap / 2 + 1e-6).all())
    assert (restored - weight).norm() / weight.norm() < 0.11  # NF4 on Gaussian weights: ~0.1


def test_double_quantization_saves_memory_and_stays_close() -> None:
    weight = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))
    plain, double = quantize_nf4(weight), quantize_nf4(weight, double_quant=True)
    assert plain.nbytes == 256 * 256 // 2 + 1024 * 4
    assert double.nbytes == 256 * 256 // 2 + 1024 + 4 * 4 + 4
    assert 8 * double.nbytes / weight.numel() == pytest.approx(4.127, abs=0.01)
    torch.testing.assert_close(double.block_absmax(), plain.absmax, rtol=0.02, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_half_precision_weights_quantize_and_come_back_in_their_dtype(dtype: torch.dtype) -> None:
    weight = torch.randn(64, 64).to(dtype)
    restored = dequantize_nf4(quantize_nf4(weight))
    assert restored.dtype == dtype
    assert ((restored.float() - weight.float()).norm() / weight.float().norm()) < 0.11


def test_non_float_weight_is_refused() -> None:
    with pytest.raises(NF4FormatError, match="only floating-point weights"):
        quantize_nf4(torch.ones(4, 4, dtype=torch.int64))


def test_unsupported_blocksize_is_refused() -> None:
    with pytest.raises(NF4FormatError, match="blocksize 48 is not supported.*64 is the QLoRA"):
        quantize_nf4(torch.randn(8, 8), blocksize=48)


def test_packed_data_that_does_not_fit_the_shape_is_refused() -> None:
    good = quantize_nf4(torch.randn(8, 16))
    with pytest.raises(NF4FormatError, match="64 bytes but a .8, 17. weight needs 68"):
        NF4Weight(good.packed, good.absmax, (8, 17))
    with pytest.raises(NF4FormatError, match="absmax has 2 values.*needs 1"):
        NF4Weight(good.packed, good.absmax, (8, 16), blocksize=128)
    with pytest.raises(NF4FormatError, match="must be uint8"):
        NF4Weight(good.packed.float(), good.absmax, (8, 16))


# bitsandbytes itself ---------------------------------------------------------------------------
bnb = pytest.importorskip("bitsandbytes.functional", reason="pip install bitsandbytes==0.50.2")


def _bnb_reference_blockwise(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' own pure-PyTorch 8-bit blockwise quantizer (its device-independent kernel)."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    return torch.ops.bitsandbytes.quantize_blockwise.default.redispatch(
        keys, values, bnb.create_dynamic_map(), 256
    )


def test_dynamic_code_equals_bitsandbytes() -> None:
    assert torch.equal(dynamic_code(), bnb.create_dynamic_map())
    assert torch.equal(torch.tensor(NF4_CODE_VALUES), bnb.get_4bit_type("nf4", device="cpu"))


@pytest.mark.parametrize("shape", SHAPES)
def test_packed_bytes_and_absmax_equal_bitsandbytes(shape: tuple[int, int]) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    ours = quantize_nf4(weight)
    packed, state = bnb.quantize_4bit(weight, quant_type="nf4")
    assert torch.equal(ours.packed, packed.reshape(-1))
    assert torch.equal(ours.absmax, state.absmax)
    assert torch.equal(dequantize_nf4(ours), bnb.dequantize_4bit(packed, state, quant_type="nf4"))


@pytest.mark.parametrize("shape", SHAPES)
def test_double_quantization_equals_bitsandbytes(shape: tuple[int, int]) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    ours = quantize_nf4(weight, double_quant=True)
    packed, state = bnb.quantize_4bit(weight, quant_type="nf4", compress_statistics=True)
    assert torch.equal(ours.packed, packed.reshape(-1))
    assert torch.equal(ours.absmax_offset, state.offset)
    assert torch.equal(ours.absmax_scale, state.state2.absmax)
    # The 8-bit absmax codes equal bitsandbytes' exact-nearest (pure-PyTorch) quantizer; its
    # native CPU search is approximate and may pick the neighbouring code near a midpoint.
    plain = bnb.quantize_4bit(weight, quant_type="nf4")[1].absmax
    codes, _ = _bnb_reference_blockwise(plain - plain.mean())
    assert torch.equal(ours.absmax, codes)
    decoded_theirs = from_bitsandbytes(packed, state).block_absmax()
    torch.testing.assert_close(ours.block_absmax(), decoded_theirs, rtol=0.01, atol=0)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("shape", [(33, 65), (300, 77)])
def test_weights_convert_both_ways_and_dequantize_identically(
    shape: tuple[int, int], double_quant: bool
) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    packed, state = bnb.quantize_4bit(weight, quant_type="nf4", compress_statistics=double_quant)
    theirs = bnb.dequantize_4bit(packed, state, quant_type="nf4")
    converted = from_bitsandbytes(packed, state)
    assert torch.equal(dequantize_nf4(converted), theirs)
    back_packed, back_state = to_bitsandbytes(converted)
    assert torch.equal(back_packed, packed)
    assert torch.equal(bnb.dequantize_4bit(back_packed, back_state), theirs)
    ours = quantize_nf4(weight, double_quant=double_quant)
    ours_packed, ours_state = to_bitsandbytes(ours)
    assert torch.equal(bnb.dequantize_4bit(ours_packed, ours_state), dequantize_nf4(ours))


def test_fp4_is_refused_by_the_converter() -> None:
    packed, state = bnb.quantize_4bit(torch.randn(8, 8), quant_type="fp4")
    with pytest.raises(NF4FormatError, match="only NF4 converts"):
        from_bitsandbytes(packed, state)


def test_memory_is_about_four_bits_a_weight() -> None:
    weight = torch.randn(576, 1536)
    assert 8 * quantize_nf4(weight).nbytes / weight.numel() == pytest.approx(4.5)
    assert math.isclose(8 * quantize_nf4(weight, double_quant=True).nbytes / weight.numel(), 4.127, abs_tol=0.01)
