"""LoRA equals HF PEFT's LoRA: same A and B give the same outputs and merged weights."""

from __future__ import annotations

import copy

import peft
import pytest
import torch
from torch import nn

import peftplug
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)
from peftplug_lora import LoraLinear

CASES = {
    "bert-query-value": (tiny_bert_classifier, {"target_modules": ["query", "value"]}, {}),
    "bert-all-linear-rslora": (
        tiny_bert_classifier,
        {"target_modules": "all-linear", "use_rslora": True},
        {},
    ),
    "llama-all-linear": (tiny_llama, {"target_modules": "all-linear"}, {}),
    "gpt2-conv1d": (tiny_gpt2, {"target_modules": ["c_attn", "c_fc"]}, {"fan_in_fan_out": True}),
}


def _peft_and_ours(case: str) -> tuple[nn.Module, nn.Module, dict]:
    build, options, peft_only = CASES[case]
    base = build()
    peft_config = peft.LoraConfig(
        r=4,
        lora_alpha=12,
        target_modules=options["target_modules"],
        use_rslora=options.get("use_rslora", False),
        task_type="SEQ_CLS" if hasattr(base, "classifier") else "CAUSAL_LM",
        **peft_only,
    )
    theirs = peft.get_peft_model(copy.deepcopy(base), peft_config)
    ours = peftplug.apply(base, ["lora"], {"lora": {"r": 4, "alpha": 12, **options}})
    torch.manual_seed(1)
    for name, module in theirs.named_modules():
        if hasattr(module, "lora_B") and "default" in getattr(module, "lora_B", {}):
            nn.init.normal_(module.lora_B["default"].weight, std=0.5)
            mine = ours.get_submodule(name.removeprefix("base_model.model."))
            mine.lora_A["default"].weight.data.copy_(module.lora_A["default"].weight)
            mine.lora_B["default"].weight.data.copy_(module.lora_B["default"].weight)
    batch = classification_batch() if hasattr(base, "classifier") else causal_lm_batch()
    batch.pop("labels")
    return theirs.eval(), ours.eval(), batch


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_modules_are_wrapped(case: str) -> None:
    theirs, ours, _ = _peft_and_ours(case)
    wrapped_theirs = {
        n.removeprefix("base_model.model.")
        for n, m in theirs.named_modules()
        if isinstance(m, peft.tuners.lora.LoraLayer)
    }
    wrapped_ours = {n for n, m in ours.named_modules() if isinstance(m, LoraLinear)}
    assert wrapped_ours == wrapped_theirs


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_match_peft(case: str) -> None:
    theirs, ours, batch = _peft_and_ours(case)
    with torch.no_grad():
        expected = theirs(**batch).logits
        got = ours(**batch).logits
        with peftplug.disable_adapters(ours):
            base = ours(**batch).logits
    assert (expected - base).abs().max() > 1e-3, "the adapters must change the output"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_merged_weights_match_peft(case: str) -> None:
    theirs, ours, batch = _peft_and_ours(case)
    merged_theirs = theirs.merge_and_unload()
    merged_ours = peftplug.unload(ours, merge=True)
    theirs_state, ours_state = merged_theirs.state_dict(), merged_ours.state_dict()
    assert theirs_state.keys() == ours_state.keys()
    for key in theirs_state:
        torch.testing.assert_close(ours_state[key], theirs_state[key], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(merged_ours(**batch).logits, merged_theirs(**batch).logits)


def test_trainable_parameter_count_matches_peft() -> None:
    theirs, ours, _ = _peft_and_ours("bert-query-value")
    expected, _ = theirs.get_nb_trainable_parameters()
    assert peftplug.trainable_parameters(ours).trainable == expected
