"""Named adapters: each layer owns its adapters; deleting or failing to add one spares others."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import peftplug
from peftplug.plugins import get_host, reset_host
from peftplug.state import peft_state
from peftplug.testing.model_snapshot import assert_model_unchanged, model_snapshot
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_llama,
)

# Every built-in method with options that apply to a tiny BERT classifier or a tiny Llama.
BUILT_INS: dict[str, tuple[str, dict[str, Any]]] = {
    "lora": ("classifier", {"r": 2}),
    "qlora": ("causal_lm", {"r": 2, "target_modules": ["q_proj"]}),
    "adapter": ("classifier", {"bottleneck_size": 4}),
    "bitfit": ("classifier", {}),
    "prompt": ("classifier", {"num_virtual_tokens": 2}),
    "ptuning": ("classifier", {"num_virtual_tokens": 2, "encoder_hidden_size": 8}),
    "prefix": ("classifier", {"num_virtual_tokens": 2, "encoder_hidden_size": 8}),
    "head": ("classifier", {}),
    "partial": ("classifier", {"last_k": 1, "train_head": False}),
    "full": ("classifier", {}),
}


def model_and_batch(kind: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    if kind == "causal_lm":
        return tiny_llama(), causal_lm_batch()
    return tiny_bert_classifier(), classification_batch()


def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def train(model: nn.Module, batch: dict[str, torch.Tensor], steps: int = 2) -> None:
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()


@pytest.mark.parametrize("method", sorted(BUILT_INS))
def test_deleting_the_first_adapter_keeps_the_second(method: str) -> None:
    kind, options = BUILT_INS[method]
    model, batch = model_and_batch(kind)
    peftplug.apply(model, [method], {method: options})
    train(model, batch)
    # An in-place method allows one adapter per model: the second is a LoRA then.
    in_place = get_host().method(method).trains_in_place
    second = ("lora", {"r": 2}) if in_place else (method, options)
    peftplug.apply(model, [second[0]], {second[0]: second[1]}, adapter_name="second")
    peftplug.set_active_adapter(model, "second")
    train(model, batch, steps=1)
    expected = logits(model, batch)
    second_tensors = {
        k: v.clone()
        for k, v in peftplug.serialization.method_tensors(
            model, peft_state(model), "second"
        ).items()
    }
    peftplug.delete_adapter(model, "default")
    assert peft_state(model).adapter_names == ["second"]
    torch.testing.assert_close(logits(model, batch), expected, rtol=0, atol=0)
    remaining = peftplug.serialization.method_tensors(model, peft_state(model), "second")
    assert remaining.keys() == second_tensors.keys()
    assert all(torch.equal(remaining[k], v) for k, v in second_tensors.items())


@pytest.mark.parametrize(
    ("methods", "config"),
    [
        (["lora"], {"lora": {"target_modules": ["qury"]}}),
        (["lora"], {"lora": {"bias": "lora_only", "target_modules": "no_such_layer.*"}}),
        (["adapter", "lora"], {"lora": {"target_modules": ["attention"]}}),
        (["prompt", "lora"], {"lora": {"modules_to_save": ["clasifier"]}}),
    ],
)
def test_a_failed_second_apply_leaves_the_model_and_the_first_adapter_bit_identical(
    methods: list[str], config: dict
) -> None:
    model, batch = model_and_batch("classifier")
    peftplug.apply(model, ["lora"], {"lora": {"r": 2}})
    train(model, batch)
    before, outputs = model_snapshot(model), logits(model, batch)
    with pytest.raises(peftplug.PeftplugError):
        peftplug.apply(model, methods, config, adapter_name="second")
    assert_model_unchanged(model, before)
    torch.testing.assert_close(logits(model, batch), outputs, rtol=0, atol=0)


@dataclasses.dataclass
class MidwayConfig(peftplug.MethodConfig):
    """A method whose prepare hook changes the model, then fails."""


def _prepare_then_fail(model: nn.Module, config: object, adapter_name: str) -> None:
    if not isinstance(config, MidwayConfig):
        return None
    model.bert.pooler.dense.weight.requires_grad_(True)
    model.bert.pooler.register_forward_hook(lambda module, args, output: output * 2)
    model.bert.embeddings.extra = nn.Linear(2, 2)
    model.classifier = nn.Identity()
    raise RuntimeError("prepare failed half-way")


@pytest.fixture
def midway_method() -> Iterator[str]:
    plugin = types.SimpleNamespace(
        peftplug_register_methods=peftplug.hookimpl(
            lambda register: register(peftplug.MethodSpec("midway", MidwayConfig))
        ),
        peftplug_prepare_model=peftplug.hookimpl(_prepare_then_fail),
    )
    get_host().add_plugin(plugin, "midway", "midway-test", "0.0")
    yield "midway"
    reset_host()


@pytest.mark.parametrize("first", [None, "lora"])
def test_a_prepare_hook_that_raises_midway_changes_nothing(
    midway_method: str, first: str | None
) -> None:
    model, batch = model_and_batch("classifier")
    if first:
        peftplug.apply(model, [first], {first: {"r": 2}})
        train(model, batch)
    before, outputs = model_snapshot(model), logits(model, batch)
    with pytest.raises(RuntimeError, match="half-way"):
        peftplug.apply(model, [midway_method], adapter_name="second")
    assert_model_unchanged(model, before)
    torch.testing.assert_close(logits(model, batch), outputs, rtol=0, atol=0)


def test_a_failed_load_into_a_model_with_an_adapter_leaves_it_bit_identical(tmp_path) -> None:
    model, batch = model_and_batch("classifier")
    peftplug.apply(model, ["lora"], {"lora": {"r": 2}})
    other = peftplug.apply(
        tiny_bert_classifier(), ["lora"], {"lora": {"r": 4}}, adapter_name="second"
    )
    peftplug.save_adapter(other, tmp_path / "adapter", adapter_name="second")
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"damaged")
    before = model_snapshot(model)
    with pytest.raises(peftplug.AdapterLoadError):
        peftplug.load_adapter(model, tmp_path / "adapter")
    assert_model_unchanged(model, before)


def test_a_replace_hook_returning_a_plain_module_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_bert_classifier()
    before = model_snapshot(model)
    monkeypatch.setattr(
        get_host().hook, "peftplug_replace_module", lambda **kwargs: nn.Sequential()
    )
    with pytest.raises(peftplug.PluginError, match="must return an AdapterLayer"):
        peftplug.apply(model, ["lora"])
    monkeypatch.undo()
    assert_model_unchanged(model, before)


@pytest.mark.parametrize("name", ["", "a.b", 3])
def test_bad_adapter_names_are_explained(name: object) -> None:
    with pytest.raises(peftplug.ConfigError, match="adapter_name must be a non-empty string"):
        peftplug.apply(tiny_bert_classifier(), ["lora"], adapter_name=name)
