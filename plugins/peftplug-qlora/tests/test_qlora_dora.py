"""DoRA over the NF4 base (qlora's ``use_dora``): normed on the dequantized weight; it trains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from peftplug_lora import DoraVariant
from peftplug_qlora import QLoraLinear, merge_requantized, merge_to_float
from torch import nn

import peftplug
from peftplug.quant import NF4Linear
from peftplug.testing import MethodConformance
from peftplug.testing.tiny_models import causal_lm_batch, tiny_bert_classifier, tiny_llama

OPTIONS = {"r": 4, "alpha": 8, "use_dora": True, "target_modules": ["q_proj", "v_proj"]}


def _applied(build: Callable[[], nn.Module] = tiny_llama, **options: object) -> nn.Module:
    """QLoRA with DoRA, B non-zero and the magnitude off the row norms, so every term counts."""
    model = peftplug.apply(build(), "qlora", {"qlora": {**OPTIONS, **options}})
    torch.manual_seed(3)
    for layer in model.modules():
        if isinstance(layer, QLoraLinear):
            nn.init.normal_(layer.lora_B["default"].weight, std=0.5)
            layer.lora_variant["default"].magnitude.data.mul_(1.5)
    return model.eval()


def _logits(model: nn.Module) -> torch.Tensor:
    batch = {k: v for k, v in causal_lm_batch().items() if k != "labels"}
    with torch.no_grad():
        return model.eval()(**batch).logits


def _dora_reference(layer: QLoraLinear, x: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch on the dequantized weight: ``m / ||W + s B A|| * (W + s B A) x + bias``."""
    lora_a, lora_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    weight = layer.base_layer.dequantize(torch.float32)
    adapted = weight + layer.scaling["default"] * lora_b @ lora_a
    scale = layer.lora_variant["default"].magnitude / adapted.norm(dim=1)
    return nn.functional.linear(x, adapted * scale.unsqueeze(1), layer.base_layer.bias)


def test_dora_over_nf4_equals_plain_pytorch_on_the_dequantized_weight() -> None:
    for build, targets in ((tiny_llama, ["q_proj", "v_proj"]), (tiny_bert_classifier, ["query"])):
        model = _applied(build, target_modules=targets)
        layers = [m for m in model.modules() if isinstance(m, QLoraLinear)]
        assert layers and all(isinstance(m.base_layer, NF4Linear) for m in layers)
        x = torch.randn(3, 5, layers[0].in_features, generator=torch.Generator().manual_seed(0))
        for layer in layers:
            assert isinstance(layer.lora_variant["default"], DoraVariant)
            with torch.no_grad():
                expected = _dora_reference(layer, x)
                torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_dora_over_nf4_trains_its_magnitude_and_lowers_the_loss() -> None:
    model = peftplug.apply(tiny_llama(), "qlora", {"qlora": OPTIONS}).train()
    layer = model.model.layers[0].self_attn.q_proj
    packed = layer.base_layer.weight_packed.clone()
    magnitude = layer.lora_variant["default"].magnitude.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = model(**causal_lm_batch()).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(layer.lora_variant["default"].magnitude, magnitude)
    assert torch.equal(layer.base_layer.weight_packed, packed)


def test_merging_into_a_float_model_keeps_the_output_and_requantizing_nearly() -> None:
    model = _applied()
    unmerged = _logits(model)
    errors = merge_requantized(model)
    assert errors and all(e["relative_rms_error"] < 0.2 for e in errors.values())
    assert (_logits(model) - unmerged).abs().max() < 0.2 * unmerged.abs().max()
    peftplug.unmerge(model)
    torch.testing.assert_close(_logits(merge_to_float(_applied())), unmerged, rtol=1e-5, atol=1e-5)


def test_a_saved_dora_adapter_loads_into_a_fresh_float_model(tmp_path: Path) -> None:
    model = _applied()
    peftplug.save_adapter(model, tmp_path / "adapter")
    loaded = peftplug.load_adapter(tiny_llama(), tmp_path / "adapter")
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


class TestQLoraDoraOnLlama(MethodConformance):
    method = "qlora"
    config = {**OPTIONS, "dropout": 0.1}
    model_kind = "causal_lm"
    lossy_base = True

    def reference_base(self) -> nn.Module:
        # Unloading leaves float layers holding the NF4-rounded weights (test_conformance.py).
        return peftplug.unload(self.applied_model())
