"""The built-in base-weight access: live, view or copy by layer type; 4-bit merges need no qlora."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import peftplug
from peftplug.plugins import get_host, reset_host
from peftplug.quant import NF4Linear, dequantize_nf4, quantize_nf4


class OneProjection(nn.Module):
    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@pytest.fixture
def only_lora(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PEFTPLUG_LOAD_PLUGINS", "lora")
    reset_host()
    yield
    reset_host()


def test_a_linear_weight_is_the_live_tensor() -> None:
    layer = nn.Linear(4, 3)
    weight = peftplug.get_base_weight(layer)
    weight[0, 1] = 5.0
    assert weight.shape == (3, 4) and layer.weight[0, 1] == 5.0


def test_a_conv1d_weight_is_a_transposed_view_of_the_live_tensor() -> None:
    layer = Conv1D(3, 4)  # stores (in, out) = (4, 3)
    weight = peftplug.get_base_weight(layer)
    weight[0, 1] = 5.0
    assert weight.shape == (3, 4) and layer.weight[1, 0] == 5.0


def test_a_4_bit_weight_is_a_copy_and_only_set_base_weight_changes_it() -> None:
    layer = NF4Linear.from_linear(nn.Linear(64, 32))
    original = layer.dequantize()
    peftplug.get_base_weight(layer).zero_()
    torch.testing.assert_close(layer.dequantize(), original, rtol=0, atol=0)
    error = peftplug.set_base_weight(layer, torch.zeros(32, 64))
    assert set(error) == {"max_abs_error", "relative_rms_error"}
    assert not layer.dequantize().any()


def test_lora_merges_over_a_4_bit_base_without_peftplug_qlora(only_lora: None) -> None:
    torch.manual_seed(0)
    model = OneProjection(NF4Linear.from_linear(nn.Linear(64, 32)))
    peftplug.apply(model, ["lora"], {"lora": {"target_modules": ["proj"], "r": 4}})
    assert set(get_host().plugins) == {"peftplug.builtin", "lora"}
    for parameter in model.parameters():
        if parameter.requires_grad:
            nn.init.normal_(parameter, std=0.1)  # B starts at zero: give the adapter an update
    base = model.proj.base_layer
    merged = base.dequantize() + model.proj.delta_weight("default")
    peftplug.merge(model)
    torch.testing.assert_close(base.dequantize(), dequantize_nf4(quantize_nf4(merged)))
