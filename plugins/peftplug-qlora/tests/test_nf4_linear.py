"""NF4Linear: the frozen 4-bit layer — outputs, memory, state_dict, device and dtype moves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peftplug.ops.nf4 import dequantize_reference
from peftplug.quant import NF4Linear, dequantize_nf4, quantize_nf4


def _linear(in_features: int = 96, out_features: int = 40, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features, bias=bias)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 40])  # the fused small-M path and the GEMM path
def test_output_equals_the_dequantized_float_layer(double_quant: bool, rows: int) -> None:
    linear = _linear()
    layer = NF4Linear.from_linear(linear, double_quant=double_quant)
    expected_weight = dequantize_nf4(quantize_nf4(linear.weight.data, double_quant=double_quant))
    x = torch.randn(rows, 96)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, expected_weight, linear.bias))
    assert not any(p.requires_grad for p in layer.parameters())


def test_memory_is_an_eighth_of_fp32_and_a_quarter_of_bf16() -> None:
    layer = NF4Linear.from_linear(_linear(576, 1536, bias=False), double_quant=True)
    fp32_bytes, bf16_bytes = 576 * 1536 * 4, 576 * 1536 * 2
    assert layer.memory_bytes == 576 * 1536 // 2 + 576 * 1536 // 64 + 4 * 54 + 4
    assert layer.memory_bytes / fp32_bytes == pytest.approx(1 / 8, rel=0.04)
    assert layer.memory_bytes / bf16_bytes == pytest.approx(1 / 4, rel=0.04)


def test_state_dict_round_trips_into_a_fresh_layer() -> None:
    source = NF4Linear.from_linear(_linear(), double_quant=True)
    target = NF4Linear(96, 40, double_quant=True)
    target.load_state_dict(source.state_dict())
    assert set(source.state_dict()) == {
        "bias", "weight_packed", "weight_absmax", "weight_absmax_scale", "weight_absmax_offset"
    }
    x = torch.randn(3, 96)
    assert torch.equal(target(x), source(x))


def test_a_dtype_cast_keeps_the_packed_weight_and_changes_the_compute_dtype() -> None:
    layer = NF4Linear.from_linear(_linear())
    absmax = layer.weight_absmax.clone()
    layer.to(torch.bfloat16)
    assert layer.compute_dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
    assert layer.weight_absmax.dtype == torch.float32 and torch.equal(layer.weight_absmax, absmax)
    x = torch.randn(2, 96, dtype=torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16
    dense = dequantize_reference(layer.weight_packed, absmax, (40, 96), 64, torch.bfloat16)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, dense, layer.bias))


def test_moving_to_the_meta_device_and_back_keeps_the_layout() -> None:
    layer = NF4Linear.from_linear(_linear()).to("meta")
    assert layer.weight_packed.device.type == "meta" and layer.weight_packed.dtype == torch.uint8
    assert layer.weight_absmax.dtype == torch.float32


def test_requantize_reports_the_rounding_error() -> None:
    layer = NF4Linear.from_linear(_linear())
    error = layer.requantize(layer.dequantize() + 0.01)
    assert 0 < error["max_abs_error"] < 0.1 and 0 < error["relative_rms_error"] < 0.11
