"""QLoRA's own options: what is quantized, compute dtype, bad options, LoRA's layer reused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import peftplug
from peftplug.quant import NF4Linear
from peftplug.testing.tiny_models import causal_lm_batch, tiny_llama
from peftplug_lora import LoraLinear
from peftplug_qlora import QLoraLinear, weight_memory


def _apply(**options: object) -> nn.Module:
    return peftplug.apply(tiny_llama(), "qlora", {"qlora": {"r": 2, **options}})


def test_only_quantize_modules_are_4_bit_and_lora_wraps_float_targets_too() -> None:
    model = _apply(target_modules=["q_proj", "up_proj"], quantize_modules=["q_proj", "k_proj"])
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, QLoraLinear) and isinstance(layer.self_attn.q_proj.base_layer, NF4Linear)
    assert isinstance(layer.self_attn.k_proj, NF4Linear)
    assert type(layer.mlp.up_proj) is LoraLinear and type(layer.mlp.up_proj.base_layer) is nn.Linear
    assert type(layer.mlp.down_proj) is nn.Linear


def test_adapter_tensors_are_loras_only_and_the_base_is_frozen() -> None:
    model = _apply(target_modules="all-linear")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert sum(isinstance(m, NF4Linear) for m in model.modules()) == 14


def test_weight_memory_counts_the_4_bit_layers() -> None:
    model = _apply(target_modules=["q_proj"])
    memory = weight_memory(model)
    layers = [m for m in model.modules() if isinstance(m, NF4Linear)]
    assert memory["nf4_layer_bytes"] == sum(m.memory_bytes for m in layers)
    weights = sum(m.in_features * m.out_features for m in layers)
    assert memory["nf4_layers_as_fp32_bytes"] == 4 * weights  # Llama projections have no bias


def test_bfloat16_compute_runs_and_trains() -> None:
    model = _apply(target_modules=["q_proj", "v_proj"], compute_dtype="bfloat16")
    layer = model.model.layers[0].self_attn.q_proj.base_layer
    assert layer.compute_dtype == torch.bfloat16
    model.train()
    loss = model(**causal_lm_batch()).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.grad is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [({"blocksize": 48}, "'blocksize' must be one of"), ({"compute_dtype": "int8"}, "must be one of")],
)
def test_bad_options_are_explained(options: dict, message: str) -> None:
    model = tiny_llama()
    with pytest.raises(peftplug.ConfigError, match=message):
        peftplug.apply(model, "qlora", {"qlora": options})
    assert not any(isinstance(m, NF4Linear) for m in model.modules())
