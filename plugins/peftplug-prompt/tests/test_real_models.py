"""Prompt tuning on the shipped models through the stock Trainer: accuracy rises, loss falls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import peftplug
from peftplug.data import load_encoder
from peftplug.testing import load_causal_lm_workload, load_encoder_workload
from peftplug_prompt import prompt_layer

pytestmark = pytest.mark.slow

INIT_TEXT = "Classify the sentiment of this review:"


def test_prompt_tuning_on_the_encoder_improves_accuracy(tmp_path: Path) -> None:
    reviews = load_encoder_workload(held_out_size=400, train_size=1600)
    model, before = reviews.model, reviews.accuracy()
    config = {"num_virtual_tokens": 20, "init": "text", "init_text": INIT_TEXT}
    reviews.trainer(
        tmp_path, {"prompt": config},
        max_steps=60, per_device_train_batch_size=16, learning_rate=3e-2, warmup_steps=6,
    ).train()
    after = reviews.accuracy()
    hidden, labels = model.config.hidden_size, model.config.num_labels
    trainable = peftplug.trainable_parameters(model).trainable
    assert trainable == 20 * hidden + hidden * labels + labels
    adapter = peftplug.save_adapter(model, tmp_path / "adapter")
    size = (adapter / "adapter_model.safetensors").stat().st_size
    print(f"prompt on the encoder: trainable {trainable}, adapter {size} bytes, "
          f"accuracy {before:.3f} -> {after:.3f}")
    assert after > before + 0.03, f"held-out accuracy {before:.3f} -> {after:.3f}"


def test_text_init_uses_the_models_own_tokenizer() -> None:
    model, tokenizer = load_encoder(num_labels=2)
    table = model.get_input_embeddings().weight.detach().clone()
    config = {"num_virtual_tokens": 20, "init": "text", "init_text": INIT_TEXT}
    peftplug.apply(model, "prompt", {"prompt": config})
    ids = tokenizer(INIT_TEXT, add_special_tokens=False)["input_ids"]
    expected = table[(ids * 20)[:20]]
    torch.testing.assert_close(prompt_layer(model).prompts["default"].embedding, expected)


def test_prompt_tuning_on_the_causal_lm_lowers_loss_and_generates(tmp_path: Path) -> None:
    qa = load_causal_lm_workload(held_out_size=32)
    before = qa.loss()
    qa.trainer(tmp_path, {"prompt": {"num_virtual_tokens": 20}}, max_steps=12,
               per_device_train_batch_size=4, learning_rate=3e-2, warmup_steps=1).train()
    after, answer = qa.loss(), qa.decode(qa.answer_ids())
    print(f"prompt on the causal LM: held-out loss {before:.3f} -> {after:.3f}, "
          f"generated: {answer!r}")
    assert after < before - 0.1, f"held-out loss {before:.3f} -> {after:.3f}"
    assert answer.strip()
