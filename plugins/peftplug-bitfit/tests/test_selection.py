"""What BitFit trains on tiny models, checked against counts taken independently from the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import peftplug
from peftplug.state import peft_state
from peftplug.testing.tiny_models import classification_batch, tiny_bert_classifier, tiny_llama

REDUCED = ["query", "value", "intermediate.dense"]


def bitfit(model: nn.Module, **options: object) -> nn.Module:
    return peftplug.apply(model, ["bitfit"], {"bitfit": options})


def trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


HEAD_COPY = {"classifier.modules_to_save.default.weight", "classifier.modules_to_save.default.bias"}


def body_biases(model: nn.Module) -> set[str]:
    """Every bias outside the task head (whose trained copy is the core's)."""
    return {
        n for n, _ in model.named_parameters() if n.endswith(".bias") and not n.startswith("classifier.")
    }


def numel(model: nn.Module, names: set[str]) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name in names)


def test_default_trains_every_bias_and_a_copy_of_the_head() -> None:
    model = bitfit(tiny_bert_classifier())
    expected = body_biases(model) | HEAD_COPY
    assert trainable(model) == expected
    assert peftplug.trainable_parameters(model).trainable == numel(model, expected)


def test_without_the_head_only_biases_train() -> None:
    model = bitfit(tiny_bert_classifier(), train_head=False)
    assert trainable(model) == {n for n, _ in model.named_parameters() if n.endswith(".bias")}


def test_reduced_variant_trains_query_value_and_intermediate_biases() -> None:
    model = bitfit(tiny_bert_classifier(), target_modules=REDUCED)
    config = model.config
    per_layer = 2 * config.hidden_size + config.intermediate_size
    head = (config.hidden_size + 1) * config.num_labels
    assert peftplug.trainable_parameters(model).trainable == (
        config.num_hidden_layers * per_layer + head
    )
    assert all(
        name.startswith("classifier.") or name.rsplit(".", 2)[-2] in ("query", "value", "dense")
        for name in trainable(model)
    )


def test_a_regex_selects_the_same_biases_as_names() -> None:
    by_names = trainable(bitfit(tiny_bert_classifier(), target_modules=REDUCED))
    pattern = r".*\.(query|value|intermediate\.dense)"
    assert trainable(bitfit(tiny_bert_classifier(), target_modules=pattern)) == by_names


def test_a_name_selects_the_biases_of_the_modules_inside_it() -> None:
    model = bitfit(tiny_bert_classifier(), target_modules=["attention"], train_head=False)
    assert trainable(model) == {
        n for n, _ in model.named_parameters() if ".attention." in n and n.endswith(".bias")
    }


def test_train_norms_adds_layernorm_weights() -> None:
    model = bitfit(tiny_bert_classifier(), train_norms=True)
    norms = {n for n, _ in model.named_parameters() if "LayerNorm" in n}
    assert trainable(model) == body_biases(model) | norms | HEAD_COPY


def test_train_norms_on_a_bias_free_llama_trains_its_rmsnorms() -> None:
    model = bitfit(tiny_llama(), train_norms=True)
    config = model.config
    assert trainable(model) == {n for n, _ in model.named_parameters() if "norm" in n}
    norms_per_layer = 2  # before attention and before the MLP, plus one final norm
    assert peftplug.trainable_parameters(model).trainable == (
        (norms_per_layer * config.num_hidden_layers + 1) * config.hidden_size
    )


def test_a_model_without_biases_needs_train_norms() -> None:
    model = tiny_llama()
    with pytest.raises(peftplug.ConfigError, match=r"no bias terms.*train_norms=True"):
        bitfit(model)
    assert peft_state(model) is None
    assert all(p.requires_grad for p in model.parameters())


def test_biases_asked_of_a_bias_free_model_with_norms_are_refused() -> None:
    with pytest.raises(peftplug.ConfigError, match="no bias terms; drop target_modules"):
        bitfit(tiny_llama(), train_norms=True, target_modules=["q_proj"])


@pytest.mark.parametrize(
    ("targets", "close"),
    [
        (["querry"], "query"),
        (["query", "valeu"], "value"),
        (["intermediate.dens"], "intermediate.dense"),
    ],
)
def test_a_name_that_selects_no_bias_is_refused_with_close_names(
    targets: list[str], close: str
) -> None:
    model = tiny_bert_classifier()
    with pytest.raises(peftplug.TargetError, match=f"selects no bias.*close names: .*{close}"):
        bitfit(model, target_modules=targets)
    assert peft_state(model) is None


def test_a_module_without_biases_is_refused_listing_the_modules_that_have_them() -> None:
    with pytest.raises(peftplug.TargetError, match="modules with biases here: .*query"):
        bitfit(tiny_bert_classifier(), target_modules=["word_embeddings"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target_modules": []}, "at least one module"),
        ({"target_modules": ["query", ""]}, "no empty names"),
        ({"target_modules": "(query"}, "not a valid regular expression"),
        ({"train_norms": "yes"}, "must be bool"),
    ],
)
def test_bad_options_are_refused_before_the_model_is_touched(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(peftplug.ConfigError, match=message):
        bitfit(tiny_bert_classifier(), **options)


def test_a_second_bitfit_adapter_is_refused() -> None:
    model = bitfit(tiny_bert_classifier())
    with pytest.raises(peftplug.ConfigError, match="already has a 'bitfit' adapter"):
        peftplug.apply(model, ["bitfit"], {"bitfit": {}}, adapter_name="second")
    assert peft_state(model).adapter_names == ["default"]


def test_unload_keeps_the_biases_trained_in_place_and_merge_keeps_the_head() -> None:
    model = bitfit(tiny_bert_classifier()).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**classification_batch()).loss.backward()
    optimizer.step()
    trained = {
        n.replace("modules_to_save.default.", ""): p.detach().clone()
        for n, p in model.named_parameters()
    }
    peftplug.unload(model, merge=True)
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters())


def test_with_lora_every_bias_trains_beside_the_low_rank_update(tmp_path: Path) -> None:
    pytest.importorskip("peftplug_lora")
    model = peftplug.apply(
        tiny_bert_classifier(), ["lora", "bitfit"], {"lora": {"r": 2}, "bitfit": {}}
    )
    lora = {n for n, _ in model.named_parameters() if ".lora_" in n}
    assert trainable(model) == body_biases(model) | lora | HEAD_COPY
    peftplug.save_adapter(model, tmp_path / "adapter")
    loaded = peftplug.load_adapter(tiny_bert_classifier(), tmp_path / "adapter")
    assert trainable(loaded) == trainable(model)


def test_biases_of_modules_lora_wraps_later_are_saved_under_their_new_names(
    tmp_path: Path,
) -> None:
    pytest.importorskip("peftplug_lora")
    model = peftplug.apply(
        tiny_bert_classifier(),
        ["bitfit", "lora"],
        {"bitfit": {}, "lora": {"r": 2, "modules_to_save": []}},
    )
    query_bias = "bert.encoder.layer.0.attention.self.query.base_layer.bias"
    assert query_bias in trainable(model)
    with torch.no_grad():
        model.get_parameter(query_bias).add_(1.0)
    peftplug.save_adapter(model, tmp_path / "adapter")
    loaded = peftplug.load_adapter(tiny_bert_classifier(), tmp_path / "adapter")
    torch.testing.assert_close(loaded.get_parameter(query_bias), model.get_parameter(query_bias))


def test_biases_with_a_prefix_in_their_name_count_as_biases() -> None:
    model = bitfit(nn.Sequential(nn.MultiheadAttention(8, 2)))
    assert trainable(model) == {"0.in_proj_bias", "0.out_proj.bias"}


def test_train_norms_on_a_model_without_norms_is_refused() -> None:
    with pytest.raises(peftplug.TargetError, match="no LayerNorm or RMSNorm.*train_norms=False"):
        bitfit(nn.Sequential(nn.Linear(4, 4)), train_norms=True)
