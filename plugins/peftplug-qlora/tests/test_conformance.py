"""QLoRA passes the conformance suite; unload and merge are checked against NF4-rounded references."""

from __future__ import annotations

import torch
from peftplug_qlora import QLoraLinear, merge_requantized, merge_to_float
from torch import nn

import peftplug
from peftplug.quant import NF4Linear, dequantize_nf4, quantize_nf4
from peftplug.testing import MethodConformance


def _rounded(
    model: nn.Module, names: set[str], delta: dict[str, torch.Tensor] | None = None,
    double_quant: bool = True,
) -> nn.Module:
    """``model`` with each named linear weight sent through NF4 and back (then ``+ delta``, again)."""
    for name, module in model.named_modules():
        if name in names:
            weight = dequantize_nf4(quantize_nf4(module.weight.data, double_quant=double_quant))
            if delta is not None:
                weight = dequantize_nf4(quantize_nf4(weight + delta[name], double_quant=double_quant))
            module.weight.data = weight
    return model


class QLoraConformance(MethodConformance):
    """QLoRA's base is its NF4-rounded weights: the suite compares with those."""

    lossy_base = True

    def reference_base(self) -> nn.Module:
        return _rounded(
            self.make_model(), self.quantized_names(), double_quant=self.config.get("double_quant", True)
        )

    def quantized_names(self) -> set[str]:
        model = self.applied_model()
        return {n.removesuffix(".base_layer") for n, m in model.named_modules() if isinstance(m, NF4Linear)}


class TestQLoraOnLlama(QLoraConformance):
    method = "qlora"
    config = {"r": 4, "target_modules": ["q_proj", "v_proj"], "dropout": 0.1}
    model_kind = "causal_lm"

    def test_all_block_linears_are_4_bit_and_head_and_norms_are_not(self) -> None:
        model = self.applied_model()
        names = self.quantized_names()
        assert len(names) == 2 * 7  # q, k, v, o, gate, up, down in 2 layers
        assert type(model.lm_head) is nn.Linear
        assert all(m.weight.dtype == torch.float32 for n, m in model.named_modules() if "norm" in n and n)
        assert {n for n, m in model.named_modules() if isinstance(m, QLoraLinear)} == {
            f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")
        }

    def test_unload_restores_the_base_model(self) -> None:
        # Quantization is lossy: unloading gives float layers holding the NF4-rounded weights.
        names = self.quantized_names()
        expected = self.outputs(_rounded(self.make_model(), names))
        model = peftplug.unload(self.applied_model())
        assert not any(isinstance(m, NF4Linear) for m in model.modules())
        torch.testing.assert_close(self.outputs(model), expected)

    def test_merge_and_unmerge(self) -> None:
        model = self.trained_model()
        unmerged = self.outputs(model)
        deltas = {
            n: m.delta_weight("default").detach() for n, m in model.named_modules() if isinstance(m, QLoraLinear)
        }
        expected_model = _rounded(self.make_model(), self.quantized_names() - set(deltas))
        expected_model = _rounded(expected_model, set(deltas), deltas)
        assert not torch.allclose(self.outputs(expected_model), unmerged, atol=1e-3)
        errors = merge_requantized(model)
        assert set(errors) == set(deltas)
        assert all(0 < e["relative_rms_error"] < 0.2 for e in errors.values())
        torch.testing.assert_close(self.outputs(model), self.outputs(expected_model), rtol=1e-4, atol=1e-4)
        peftplug.unmerge(model)
        assert not any(layer.merged_adapters for layer in model.modules() if isinstance(layer, QLoraLinear))

    def test_merge_to_float_adds_no_rounding(self) -> None:
        model = self.trained_model()
        unmerged = self.outputs(model)
        merged = merge_to_float(model)
        assert not any(isinstance(m, (NF4Linear, QLoraLinear)) for m in merged.modules())
        torch.testing.assert_close(self.outputs(merged), unmerged, rtol=1e-4, atol=1e-5)


class TestQLoraAllLinearPlainAbsmax(QLoraConformance):
    method = "qlora"
    config = {"r": 4, "target_modules": "all-linear", "double_quant": False}
    model_kind = "causal_lm"

    def test_unload_restores_the_base_model(self) -> None:
        model = peftplug.unload(self.applied_model())
        assert not any(isinstance(m, NF4Linear) for m in model.modules())

    def test_merge_and_unmerge(self) -> None:
        model = self.trained_model()
        unmerged = self.outputs(model)
        merge_requantized(model)
        merged = self.outputs(model)
        assert 0 < (merged - unmerged).abs().max() < 0.2 * unmerged.abs().max()
