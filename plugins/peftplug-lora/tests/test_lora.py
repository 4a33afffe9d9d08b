"""LoRA's own options: named adapters, LoRA+, bias modes, modules_to_save, rsLoRA."""

from __future__ import annotations

import math

import pytest
import torch
from peftplug_lora import LoraConfig, LoraLinear
from transformers import TrainingArguments

import peftplug
from peftplug.optim import build_param_groups
from peftplug.testing.tiny_models import classification_batch, tiny_bert_classifier


def _logits(model: torch.nn.Module) -> torch.Tensor:
    batch = classification_batch()
    batch.pop("labels")
    with torch.no_grad():
        return model.eval()(**batch).logits


def _randomise_b(model: torch.nn.Module, adapter: str, seed: int) -> None:
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, LoraLinear) and adapter in module.lora_B:
            torch.nn.init.normal_(module.lora_B[adapter].weight)


def test_named_adapters_switch_and_disable() -> None:
    model = tiny_bert_classifier()
    base = _logits(model)
    peftplug.apply(model, "lora", {"lora": {"r": 2}})
    _randomise_b(model, "default", 0)
    peftplug.apply(model, "lora", {"lora": {"r": 4}}, adapter_name="other")
    _randomise_b(model, "other", 1)
    first = _logits(model)
    query = model.bert.encoder.layer[0].attention.self.query
    assert query.lora_A["other"].weight.requires_grad is False  # added, not active
    peftplug.set_active_adapter(model, "other")
    second = _logits(model)
    assert query.lora_A["other"].weight.requires_grad and not query.lora_A["default"].weight.requires_grad
    assert not torch.allclose(first, second) and not torch.allclose(second, base)
    with peftplug.disable_adapters(model):
        torch.testing.assert_close(_logits(model), base)
    torch.testing.assert_close(_logits(model), second)
    peftplug.delete_adapter(model, "other")
    torch.testing.assert_close(_logits(model), first)
    with pytest.raises(peftplug.PeftplugError, match="no adapter named 'other'"):
        peftplug.set_active_adapter(model, "other")


def test_disable_while_merged_gives_the_base_and_remerges() -> None:
    model = tiny_bert_classifier()
    base = _logits(model)
    peftplug.apply(model, "lora")
    _randomise_b(model, "default", 0)
    adapted = _logits(model)
    peftplug.merge(model)
    with peftplug.disable_adapters(model):
        torch.testing.assert_close(_logits(model), base, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_logits(model), adapted, rtol=1e-5, atol=1e-5)


def test_same_adapter_name_twice_is_refused() -> None:
    model = peftplug.apply(tiny_bert_classifier(), "lora")
    with pytest.raises(peftplug.ConfigError, match="another adapter_name"):
        peftplug.apply(model, "lora")


def test_loraplus_gives_b_a_higher_learning_rate() -> None:
    model = peftplug.apply(tiny_bert_classifier(), "lora", {"lora": {"loraplus_lr_ratio": 16}})
    args = TrainingArguments(output_dir="unused", learning_rate=1e-4, report_to=[])
    groups = build_param_groups(model, args)
    b_weights = {id(m.lora_B["default"].weight) for m in model.modules() if isinstance(m, LoraLinear)}
    a_weights = {id(m.lora_A["default"].weight) for m in model.modules() if isinstance(m, LoraLinear)}
    by_lr: dict[float, set[int]] = {}
    for group in groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert b_weights <= by_lr[1e-4 * 16]
    assert a_weights <= by_lr[1e-4]


@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_bias_modes_train_the_right_biases(bias: str) -> None:
    model = peftplug.apply(
        tiny_bert_classifier(), "lora", {"lora": {"bias": bias, "modules_to_save": []}}
    )
    trained = {n for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")}
    all_biases = {n for n, _ in model.named_parameters() if n.endswith("bias")}
    wrapped = {n for n in all_biases if ".query.base_layer." in n or ".value.base_layer." in n}
    assert trained == {"none": set(), "all": all_biases, "lora_only": wrapped}[bias]


def test_modules_to_save_auto_trains_a_copy_of_the_head() -> None:
    model = tiny_bert_classifier()
    head = model.classifier
    peftplug.apply(model, "lora")
    assert model.classifier.base_layer is head and not head.weight.requires_grad
    copy = model.classifier.modules_to_save["default"]
    assert copy.weight.requires_grad and torch.equal(copy.weight, head.weight)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        head.weight.numel() + head.bias.numel() + 2 * 2 * 8 * (32 + 32)
    )


def test_modules_to_save_with_an_unknown_name_suggests_one() -> None:
    with pytest.raises(peftplug.TargetError, match="did you mean 'classifier'"):
        peftplug.apply(tiny_bert_classifier(), "lora", {"lora": {"modules_to_save": ["clasifier"]}})


def test_rslora_scales_by_the_root_of_the_rank() -> None:
    assert LoraConfig(r=16, alpha=8).scaling == 0.5
    assert LoraConfig(r=16, alpha=8, use_rslora=True).scaling == pytest.approx(8 / math.sqrt(16))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"r": 0}, "positive rank"),
        ({"dropout": 1.5}, r"\[0, 1\)"),
        ({"loraplus_lr_ratio": -1}, "16 is typical"),
        ({"target_modules": "(unclosed"}, "not a valid regex"),
        ({"target_modules": ["attention"]}, "can only wrap Linear, Conv1D"),
    ],
)
def test_bad_options_are_explained(options: dict, message: str) -> None:
    model = tiny_bert_classifier()
    with pytest.raises(peftplug.PeftplugError, match=message):
        peftplug.apply(model, "lora", {"lora": options})
    assert not hasattr(model, "_peftplug_state")
    assert all(p.requires_grad for p in model.parameters())
    assert type(model.bert.encoder.layer[0].attention.self.query) is torch.nn.Linear
