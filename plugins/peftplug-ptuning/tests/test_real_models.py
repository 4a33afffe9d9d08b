"""P-tuning on the shipped models through the stock Trainer: accuracy rises, loss falls, folds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import DataCollatorWithPadding

import peftplug
from peftplug.data import (
    CausalLMCollator,
    causal_lm_dataset,
    classification_dataset,
    load_causal_lm,
    load_encoder,
    load_qa_pairs,
    load_reviews,
)
from peftplug.data.encode import chat_prompt
from peftplug.metrics import causal_lm_loss, classification_accuracy
from peftplug.testing import stock_trainer
from peftplug_ptuning import fold

pytestmark = pytest.mark.slow


def test_ptuning_on_the_encoder_improves_accuracy_and_folds(tmp_path: Path) -> None:
    split = load_reviews(test_size=2000, seed=0)
    model, tokenizer = load_encoder(num_labels=2)
    collate = DataCollatorWithPadding(tokenizer)
    held_out = classification_dataset(tokenizer, split.test[:400])
    before = classification_accuracy(model, held_out, collate)
    config = {"num_virtual_tokens": 20, "init": "text"}
    config["init_text"] = "Classify the sentiment of this review:"
    stock_trainer(
        model, classification_dataset(tokenizer, split.train[:1600]), collate, tmp_path,
        {"ptuning": config},
        max_steps=60, per_device_train_batch_size=16, learning_rate=3e-2, warmup_steps=6,
    ).train()
    after = classification_accuracy(model, held_out, collate)
    trainable = peftplug.trainable_parameters(model).trainable
    fold(model)
    assert classification_accuracy(model, held_out, collate) == after
    hidden, labels = model.config.hidden_size, model.config.num_labels
    assert peftplug.trainable_parameters(model).trainable == 20 * hidden + hidden * labels + labels
    adapter = peftplug.save_adapter(model, tmp_path / "adapter")
    size = (adapter / "adapter_model.safetensors").stat().st_size
    print(f"ptuning on the encoder: trainable {trainable}, folded adapter {size} bytes, "
          f"accuracy {before:.3f} -> {after:.3f}")
    assert after > before + 0.03, f"held-out accuracy {before:.3f} -> {after:.3f}"


def test_ptuning_on_the_causal_lm_lowers_loss_and_generates(tmp_path: Path) -> None:
    split = load_qa_pairs(test_size=200, seed=0)
    model, tokenizer = load_causal_lm()
    collate = CausalLMCollator(pad_token_id=tokenizer.pad_token_id)
    held_out = causal_lm_dataset(tokenizer, split.test[:32], max_length=64)
    before = causal_lm_loss(model, held_out, collate)
    stock_trainer(
        model, causal_lm_dataset(tokenizer, split.train, max_length=64), collate, tmp_path,
        {"ptuning": {"num_virtual_tokens": 20}},
        max_steps=20, per_device_train_batch_size=4, learning_rate=1e-2, warmup_steps=2,
    ).train()
    fold(model)
    after = causal_lm_loss(model, held_out, collate)
    print(f"ptuning on the causal LM: held-out loss {before:.3f} -> {after:.3f}")
    assert after < before - 0.1, f"held-out loss {before:.3f} -> {after:.3f}"
    question = tokenizer(chat_prompt(tokenizer, split.test[0].prompt), return_tensors="pt")
    with torch.no_grad():
        answer = model.eval().generate(**question, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(answer[0, question["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"generated: {text!r}")
    assert text.strip()
