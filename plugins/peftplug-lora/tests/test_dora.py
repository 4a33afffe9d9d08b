"""DoRA (``use_dora``) equals HF PEFT's: outputs, merged weights and gradients, at 1e-5."""

from __future__ import annotations

import copy
from collections.abc import Callable

import peft
import pytest
import torch
from peftplug_lora import DoraVariant, LoraLinear
from torch import nn

import peftplug
from peftplug.data import load_encoder
from peftplug.serialization import method_tensors
from peftplug.state import peft_state
from peftplug.testing import MethodConformance
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)

PEFT_PREFIX = "base_model.model."


def _minilm() -> nn.Module:
    return load_encoder(num_labels=2)[0].eval()


CASES: dict[str, tuple[Callable[[], nn.Module], dict, dict]] = {
    "bert-query-value": (tiny_bert_classifier, {"target_modules": ["query", "value"]}, {}),
    "llama-all-linear": (tiny_llama, {"target_modules": "all-linear"}, {}),
    "gpt2-conv1d": (tiny_gpt2, {"target_modules": ["c_attn", "c_fc"]}, {"fan_in_fan_out": True}),
    "minilm-query-value": (_minilm, {"target_modules": ["query", "value"]}, {}),
}


def _wrapped_pairs(theirs: nn.Module, ours: nn.Module) -> list[tuple[nn.Module, LoraLinear]]:
    """(PEFT layer, our layer) for every wrapped module."""
    return [
        (module, ours.get_submodule(name.removeprefix(PEFT_PREFIX)))
        for name, module in theirs.named_modules()
        if isinstance(module, peft.tuners.lora.LoraLayer)
    ]


def _peft_and_ours(
    case: str, randomise: bool = True, **options: object
) -> tuple[nn.Module, nn.Module, dict]:
    """PEFT's and our DoRA on the same base, PEFT's A and B copied into ours.

    With ``randomise``, B and the magnitude are first drawn at random and the magnitude is copied
    too; without, each magnitude keeps its own initial value.
    """
    build, targets, peft_only = CASES[case]
    base = build()
    peft_config = peft.LoraConfig(
        r=4, lora_alpha=12, use_dora=True, lora_dropout=options.get("dropout", 0.0),
        target_modules=targets["target_modules"],
        task_type="SEQ_CLS" if hasattr(base, "classifier") else "CAUSAL_LM", **peft_only,
    )
    theirs = peft.get_peft_model(copy.deepcopy(base), peft_config)
    config = {"r": 4, "alpha": 12, "use_dora": True, **targets, **options}
    ours = peftplug.apply(base, ["lora"], {"lora": config})
    torch.manual_seed(1)
    for their_layer, our_layer in _wrapped_pairs(theirs, ours):
        magnitude = their_layer.lora_magnitude_vector["default"].weight
        if randomise:
            nn.init.normal_(their_layer.lora_B["default"].weight, std=0.5)
            magnitude.data.mul_(torch.empty_like(magnitude).uniform_(0.5, 1.5))
        our_layer.lora_A["default"].weight.data.copy_(their_layer.lora_A["default"].weight)
        our_layer.lora_B["default"].weight.data.copy_(their_layer.lora_B["default"].weight)
        if randomise:
            our_layer.lora_variant["default"].magnitude.data.copy_(magnitude)
    batch = classification_batch() if hasattr(base, "classifier") else causal_lm_batch()
    batch.pop("labels")
    return theirs.eval(), ours.eval(), batch


def _max_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    return (got - expected).abs().max().item()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_fresh_adapter_has_peft_magnitude_and_leaves_the_output_unchanged(case: str) -> None:
    theirs, ours, batch = _peft_and_ours(case, randomise=False)
    for their_layer, our_layer in _wrapped_pairs(theirs, ours):
        variant = our_layer.lora_variant["default"]
        assert isinstance(variant, DoraVariant)
        expected = their_layer.lora_magnitude_vector["default"].weight
        torch.testing.assert_close(variant.magnitude, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        got = ours(**batch).logits
        with peftplug.disable_adapters(ours):
            base = ours(**batch).logits
    torch.testing.assert_close(got, base, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_match_peft(case: str) -> None:
    theirs, ours, batch = _peft_and_ours(case)
    with torch.no_grad():
        expected = theirs(**batch).logits
        got = ours(**batch).logits
        with peftplug.disable_adapters(ours):
            base = ours(**batch).logits
    assert _max_diff(expected, base) > 1e-4, "the adapters must change the output"
    assert _max_diff(got, expected) <= 1e-5


@pytest.mark.parametrize("case", sorted(CASES))
def test_merged_weights_match_peft(case: str) -> None:
    theirs, ours, batch = _peft_and_ours(case)
    with torch.no_grad():
        unmerged = ours(**batch).logits
    merged_theirs = theirs.merge_and_unload()
    merged_ours = peftplug.unload(ours, merge=True)
    theirs_state, ours_state = merged_theirs.state_dict(), merged_ours.state_dict()
    assert theirs_state.keys() == ours_state.keys()
    for key in theirs_state:
        assert _max_diff(ours_state[key], theirs_state[key]) <= 1e-5, key
    with torch.no_grad():
        assert _max_diff(merged_ours(**batch).logits, unmerged) <= 1e-5


@pytest.mark.parametrize("case", ["bert-query-value", "gpt2-conv1d", "llama-all-linear"])
def test_gradients_on_a_b_and_magnitude_match_peft(case: str) -> None:
    theirs, ours, batch = _peft_and_ours(case)
    theirs(**batch).logits.pow(2).mean().backward()
    ours(**batch).logits.pow(2).mean().backward()
    for their_layer, our_layer in _wrapped_pairs(theirs, ours):
        pairs = [
            (their_layer.lora_A["default"].weight, our_layer.lora_A["default"].weight),
            (their_layer.lora_B["default"].weight, our_layer.lora_B["default"].weight),
            (their_layer.lora_magnitude_vector["default"].weight,
             our_layer.lora_variant["default"].magnitude),
        ]
        for their_parameter, our_parameter in pairs:
            assert our_parameter.grad.abs().max() > 0
            torch.testing.assert_close(
                our_parameter.grad, their_parameter.grad, rtol=1e-4, atol=1e-6
            )


def test_training_with_dropout_matches_peft() -> None:
    theirs, ours, batch = _peft_and_ours("llama-all-linear", dropout=0.3)
    theirs.train(), ours.train()
    torch.manual_seed(7)
    expected = theirs(**batch).logits
    torch.manual_seed(7)
    got = ours(**batch).logits
    with torch.no_grad():
        no_dropout = ours.eval()(**batch).logits
    assert _max_diff(expected, no_dropout) > 1e-3, "dropout must change the training output"
    assert _max_diff(got, expected) <= 1e-5


def test_magnitude_is_trained_saved_and_switched_with_its_adapter() -> None:
    options = {"target_modules": ["q_proj"], "use_dora": True}
    model = peftplug.apply(tiny_llama(), "lora", {"lora": options})
    peftplug.apply(model, "lora", {"lora": {"target_modules": ["q_proj"]}}, adapter_name="plain")
    layer = model.model.layers[0].self_attn.q_proj
    magnitude = layer.lora_variant["default"].magnitude
    assert "plain" not in layer.lora_variant and magnitude.requires_grad
    saved = method_tensors(model, peft_state(model), "default")
    assert saved["model.layers.0.self_attn.q_proj.lora_variant.default.magnitude"] is magnitude
    peftplug.set_active_adapter(model, "plain")
    assert not magnitude.requires_grad


def test_trainable_parameter_count_matches_peft() -> None:
    theirs, ours, _ = _peft_and_ours("llama-all-linear", randomise=False)
    assert peftplug.trainable_parameters(ours).trainable == theirs.get_nb_trainable_parameters()[0]


def test_unmerge_restores_the_base_weight() -> None:
    _, ours, batch = _peft_and_ours("gpt2-conv1d")
    with torch.no_grad():
        before = ours(**batch).logits
    weight = ours.transformer.h[0].attn.c_attn.base_layer.weight.clone()
    peftplug.merge(ours)
    assert _max_diff(ours.transformer.h[0].attn.c_attn.base_layer.weight, weight) > 1e-2
    peftplug.unmerge(ours)
    torch.testing.assert_close(ours.transformer.h[0].attn.c_attn.base_layer.weight, weight)
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, before, rtol=1e-5, atol=1e-5)


class TestDoraAllLinearOnLlama(MethodConformance):
    method = "lora"
    config = {"r": 4, "target_modules": "all-linear", "dropout": 0.1, "use_dora": True}
    model_kind = "causal_lm"


class TestDoraOnGpt2Conv1D(MethodConformance):
    method = "lora"
    config = {"r": 4, "target_modules": ["c_attn", "c_proj"], "use_dora": True}
    model_kind = "causal_lm"

    def make_model(self, hidden_size: int = 32) -> nn.Module:
        return tiny_gpt2(hidden_size=hidden_size)
