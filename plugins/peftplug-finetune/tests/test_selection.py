"""What each method trains, counted independently from the model's own attributes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import peftplug
from peftplug.in_place import LEDGER_ATTRIBUTE
from peftplug.plugins import get_host
from peftplug.serialization import method_tensors
from peftplug.state import peft_state
from peftplug.testing.tiny_models import (
    classification_batch,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)

HEAD_COPY = {"classifier.modules_to_save.default.weight", "classifier.modules_to_save.default.bias"}


def numel(*modules: nn.Module) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_full_trains_every_parameter() -> None:
    model = tiny_bert_classifier()
    total = sum(p.numel() for p in model.parameters())
    peftplug.apply(model, ["full"])
    assert trainable(model) == total
    assert set(method_tensors(model, peft_state(model))) == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("last_k", [1, 2])
def test_partial_trains_the_last_k_encoder_layers_and_the_classifier(last_k: int) -> None:
    model = tiny_bert_classifier()
    expected = numel(*model.bert.encoder.layer[-last_k:], model.classifier)
    layers = len(model.bert.encoder.layer)
    names = {
        f"bert.encoder.layer.{i}.{name}"
        for i in range(layers - last_k, layers)
        for name, _ in model.bert.encoder.layer[i].named_parameters()
    }
    peftplug.apply(model, ["partial"], {"partial": {"last_k": last_k}})
    assert trainable(model) == expected
    assert trainable_names(model) == names | HEAD_COPY


def test_partial_trains_the_last_decoder_layers_of_a_causal_lm() -> None:
    model = tiny_llama()
    expected = numel(model.model.layers[-1], model.model.norm)
    peftplug.apply(model, ["partial"], {"partial": {"last_k": 1, "modules": ["model.norm"]}})
    assert trainable(model) == expected
    assert trainable_names(model) == {
        f"model.layers.1.{n}" for n, _ in model.model.layers[1].named_parameters()
    } | {"model.norm.weight"}


def test_partial_finds_gpt2_blocks_too() -> None:
    model = tiny_gpt2()
    peftplug.apply(model, ["partial"], {"partial": {"last_k": 1, "modules": ["ln_f"]}})
    assert trainable(model) == numel(model.transformer.h[-1], model.transformer.ln_f)


def test_partial_named_modules_without_blocks_and_without_head() -> None:
    model = tiny_bert_classifier()
    expected = numel(model.bert.pooler)
    config = {"last_k": 0, "modules": ["pooler"], "train_head": False}
    peftplug.apply(model, ["partial"], {"partial": config})
    assert trainable(model) == expected


def test_partial_with_last_k_zero_trains_what_head_trains() -> None:
    partial = peftplug.apply(tiny_bert_classifier(), ["partial"], {"partial": {"last_k": 0}})
    head = peftplug.apply(tiny_bert_classifier(), ["head"])
    assert trainable_names(partial) == trainable_names(head)
    assert trainable_names(head) == HEAD_COPY


def test_head_trains_the_classifier_only() -> None:
    model = tiny_bert_classifier()
    expected = numel(model.classifier)
    peftplug.apply(model, ["head"])
    assert trainable(model) == expected == 32 * 2 + 2


def test_head_trains_the_output_layer_of_a_causal_lm_when_asked() -> None:
    model = tiny_llama()
    expected = numel(model.lm_head)
    peftplug.apply(model, ["head"], {"head": {"train_output_layer": True}})
    assert trainable(model) == expected
    assert trainable_names(model) == {"lm_head.modules_to_save.default.weight"}


def test_head_on_a_causal_lm_names_the_option_to_train_its_output_layer() -> None:
    model = tiny_llama()
    with pytest.raises(peftplug.ConfigError, match="train_output_layer=True"):
        peftplug.apply(model, ["head"])
    assert peft_state(model) is None


def test_head_refuses_train_output_layer_on_a_classifier() -> None:
    with pytest.raises(peftplug.ConfigError, match="task head is classifier"):
        peftplug.apply(tiny_bert_classifier(), ["head"], {"head": {"train_output_layer": True}})


def test_last_k_beyond_the_block_count_names_the_count_and_changes_nothing() -> None:
    model = tiny_bert_classifier()
    with pytest.raises(peftplug.TargetError, match=r"more than the 2 transformer blocks.*most 2"):
        peftplug.apply(model, ["partial"], {"partial": {"last_k": 3}})
    assert peft_state(model) is None
    assert LEDGER_ATTRIBUTE not in model.__dict__
    assert trainable(model) == numel(model)


def test_unknown_module_name_suggests_close_names() -> None:
    with pytest.raises(peftplug.TargetError, match="'pooler'"):
        peftplug.apply(tiny_bert_classifier(), ["partial"], {"partial": {"modules": ["pooller"]}})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "needs 'last_k'"),
        ({"last_k": -1}, "0 or more"),
        ({"last_k": 0, "train_head": False}, "trains nothing"),
    ],
)
def test_partial_config_errors_name_the_fix(config: dict, message: str) -> None:
    with pytest.raises(peftplug.ConfigError, match=message):
        peftplug.apply(tiny_bert_classifier(), ["partial"], {"partial": config})


def test_head_refuses_a_cache_without_memory() -> None:
    with pytest.raises(peftplug.ConfigError, match="cache_max_mb"):
        peftplug.apply(tiny_bert_classifier(), ["head"], {"head": {"cache_max_mb": 0}})


def test_two_methods_cannot_train_the_same_parameter_in_place() -> None:
    model = tiny_bert_classifier()
    peftplug.apply(model, ["partial"], {"partial": {"last_k": 1}})
    peftplug.apply(model, ["head"], adapter_name="second")  # a head copy of its own: no clash
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(peftplug.ConfigError, match="'partial' \\(adapter 'default'\\) already trains"):
        peftplug.apply(model, ["full"], adapter_name="third")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_disjoint_methods_combine_and_round_trip(tmp_path: Path) -> None:
    config = {"partial": {"last_k": 1, "train_head": False}}
    model = peftplug.apply(tiny_bert_classifier(), ["head", "partial"], config)
    head = model.classifier.modules_to_save["default"]
    assert trainable(model) == numel(head, model.bert.encoder.layer[-1])
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    peftplug.save_adapter(model, tmp_path / "adapter")
    loaded = peftplug.load_adapter(tiny_bert_classifier(), tmp_path / "adapter")
    batch = {k: v for k, v in classification_batch().items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_deleting_one_adapter_freezes_only_what_it_trained() -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["head"])
    peftplug.apply(
        model, ["partial"], {"partial": {"last_k": 1, "train_head": False}}, adapter_name="blocks"
    )
    peftplug.delete_adapter(model, "blocks")
    assert trainable_names(model) == HEAD_COPY
    peftplug.unload(model)
    assert LEDGER_ATTRIBUTE not in model.__dict__


def test_ownership_follows_parameters_into_modules_wrapped_later(tmp_path: Path) -> None:
    """LoRA wraps a query layer in the trained block: partial keeps its weight, LoRA adds A/B."""
    pytest.importorskip("peftplug_lora")
    model = tiny_bert_classifier()
    last_query = model.bert.encoder.layer[-1].attention.self.query.weight
    config = {
        "partial": {"last_k": 1, "train_head": False},
        "lora": {"r": 2, "target_modules": ["query"], "modules_to_save": []},
    }
    peftplug.apply(model, ["partial", "lora"], config)
    applied = peft_state(model).methods[0]
    partial = get_host().hook.peftplug_state_dict(
        model=model, config=applied.config, adapter_name=applied.adapter_name
    )
    assert partial["bert.encoder.layer.1.attention.self.query.base_layer.weight"] is last_query
    assert not any("lora_" in name for name in partial)
    peftplug.save_adapter(model, tmp_path / "adapter")
    loaded = peftplug.load_adapter(tiny_bert_classifier(), tmp_path / "adapter")
    assert trainable(loaded) == trainable(model)


def test_tied_output_layer_trains_an_untied_copy() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    peftplug.apply(model, ["head"], {"head": {"train_output_layer": True}})
    assert trainable(model) == 128 * 32
    assert not model.model.embed_tokens.weight.requires_grad
    assert list(method_tensors(model, peft_state(model))) == ["lm_head.modules_to_save.default.weight"]
