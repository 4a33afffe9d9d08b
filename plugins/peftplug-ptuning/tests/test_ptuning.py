"""P-tuning: parameter counts, folding keeps outputs, folded adapters save and load exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import TrainingArguments

import peftplug
from peftplug.optim import build_param_groups
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_llama,
)
from peftplug_prompt import SoftPrompt, prompt_layer
from peftplug_ptuning import PromptEncoder, fold

TOKENS, WIDTH = 5, 16


def _logits(model: nn.Module) -> torch.Tensor:
    batch = causal_lm_batch() if not hasattr(model, "classifier") else classification_batch()
    batch.pop("labels")
    with torch.no_grad():
        return model.eval()(**batch).logits


def _trained(build, **options) -> nn.Module:
    config = {"num_virtual_tokens": TOKENS, **options}
    model = peftplug.apply(build(), "ptuning", {"ptuning": config})
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = causal_lm_batch() if not hasattr(model, "classifier") else classification_batch()
    for _ in range(5):
        optimizer.zero_grad()
        model.train()(**batch).loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_trains_the_embeddings_and_the_encoder(encoder: str) -> None:
    model = tiny_llama()
    hidden = model.config.hidden_size
    config = {"num_virtual_tokens": TOKENS, "encoder": encoder, "encoder_hidden_size": WIDTH}
    peftplug.apply(model, "ptuning", {"ptuning": config})
    if encoder == "mlp":
        layers = [(hidden, WIDTH), (WIDTH, WIDTH), (WIDTH, hidden)]
    else:  # 2-layer bidirectional LSTM (input-to-hidden, hidden-to-hidden, two biases per gate set)
        lstm = sum(2 * 4 * WIDTH * (inputs + WIDTH + 2) for inputs in (hidden, 2 * WIDTH))
        layers = [(2 * WIDTH, 2 * WIDTH), (2 * WIDTH, hidden)]
    encoder_count = sum(i * o + o for i, o in layers) + (lstm if encoder == "lstm" else 0)
    expected = TOKENS * hidden + encoder_count
    assert peftplug.trainable_parameters(model).trainable == expected


def test_starts_at_the_initial_embeddings() -> None:
    """The encoder's last layer starts at zero: the first prompt is the sampled vocabulary rows."""
    model = tiny_llama()
    table = model.get_input_embeddings().weight.detach().clone()
    peftplug.apply(model, "ptuning", {"ptuning": {"num_virtual_tokens": TOKENS}})
    with torch.no_grad():
        prompt = prompt_layer(model).prompts["default"]()
    for row in prompt:
        assert (table == row).all(dim=1).any()


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_folding_keeps_the_outputs_and_drops_the_encoder(encoder: str) -> None:
    model = _trained(tiny_bert_classifier, encoder=encoder)
    before = _logits(model)
    trainable_before = peftplug.trainable_parameters(model).trainable
    fold(model)
    prompt = prompt_layer(model).prompts["default"]
    assert isinstance(prompt, SoftPrompt)
    torch.testing.assert_close(_logits(model), before, rtol=0, atol=0)
    hidden, labels = model.config.hidden_size, model.config.num_labels
    folded_count = TOKENS * hidden + hidden * labels + labels
    assert peftplug.trainable_parameters(model).trainable == folded_count
    assert trainable_before > folded_count
    fold(model)  # folding twice changes nothing
    torch.testing.assert_close(_logits(model), before, rtol=0, atol=0)


def test_a_folded_adapter_saves_small_and_loads_identically(tmp_path: Path) -> None:
    model = _trained(tiny_llama, encoder="lstm")
    unfolded = _logits(model)
    peftplug.save_adapter(model, tmp_path / "unfolded")
    fold(model)
    peftplug.save_adapter(model, tmp_path / "folded")
    folded_size = (tmp_path / "folded" / "adapter_model.safetensors").stat().st_size
    unfolded_size = (tmp_path / "unfolded" / "adapter_model.safetensors").stat().st_size
    assert folded_size < 4 * TOKENS * model.config.hidden_size + 1024 < unfolded_size
    loaded = peftplug.load_adapter(tiny_llama(), tmp_path / "folded")
    assert isinstance(prompt_layer(loaded).prompts["default"], SoftPrompt)
    torch.testing.assert_close(_logits(loaded), unfolded, rtol=0, atol=0)
    reloaded = peftplug.load_adapter(tiny_llama(), tmp_path / "unfolded")
    assert isinstance(prompt_layer(reloaded).prompts["default"], PromptEncoder)
    torch.testing.assert_close(_logits(reloaded), unfolded, rtol=0, atol=0)
    assert model.config.peftplug["methods"][0]["config"]["folded"] is True


def test_disabled_gives_the_base_and_prompt_adapters_coexist() -> None:
    model = tiny_llama()
    base = _logits(model)
    peftplug.apply(model, "ptuning", {"ptuning": {"num_virtual_tokens": TOKENS}})
    peftplug.apply(model, "prompt", {"prompt": {"num_virtual_tokens": 3}}, adapter_name="plain")
    with peftplug.disable_adapters(model):
        torch.testing.assert_close(_logits(model), base, rtol=0, atol=0)
    ptuned = _logits(model)
    peftplug.set_active_adapter(model, "plain")
    assert not torch.allclose(_logits(model), ptuned)
    peftplug.unload(model)
    torch.testing.assert_close(_logits(model), base, rtol=0, atol=0)


def test_one_adapter_cannot_hold_prompt_and_ptuning() -> None:
    model = tiny_llama()
    with pytest.raises(peftplug.ConfigError, match="another adapter_name"):
        peftplug.apply(model, ["prompt", "ptuning"])
    assert type(model.get_input_embeddings()) is nn.Embedding


def test_the_learned_embeddings_get_no_weight_decay() -> None:
    model = peftplug.apply(tiny_llama(), "ptuning")
    args = TrainingArguments(output_dir="unused", weight_decay=0.1, report_to=[])
    groups = build_param_groups(model, args)
    embedding = prompt_layer(model).prompts["default"].embedding
    (group,) = [g for g in groups if any(p is embedding for p in g["params"])]
    assert group["weight_decay"] == 0.0


def test_generate_works_folded_and_unfolded_alike() -> None:
    model = _trained(tiny_llama)
    input_ids = causal_lm_batch(batch=2, length=6)["input_ids"]
    options = {"attention_mask": torch.ones_like(input_ids), "max_new_tokens": 6}
    options |= {"do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        unfolded = model.generate(input_ids=input_ids, **options)
        fold(model)
        folded = model.generate(input_ids=input_ids, **options)
    assert torch.equal(folded, unfolded)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"encoder": "gru"}, "must be one of"), ({"encoder_hidden_size": 0}, "128 is typical")],
)
def test_bad_options_are_explained(options: dict, message: str) -> None:
    with pytest.raises(peftplug.ConfigError, match=message):
        peftplug.apply(tiny_llama(), "ptuning", {"ptuning": options})
