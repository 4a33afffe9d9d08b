"""LoRA on the shipped models through the stock Trainer: accuracy rises, held-out loss falls."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import DataCollatorWithPadding

from peftplug.data import (
    CausalLMCollator,
    causal_lm_dataset,
    classification_dataset,
    load_causal_lm,
    load_encoder,
    load_qa_pairs,
    load_reviews,
)
from peftplug.metrics import causal_lm_loss, classification_accuracy
from peftplug.testing import majority_share, stock_trainer

pytestmark = pytest.mark.slow


def test_lora_on_the_encoder_beats_chance_on_the_review_snippets(tmp_path: Path) -> None:
    split = load_reviews(test_size=2000, seed=0)
    model, tokenizer = load_encoder(num_labels=2)
    collate = DataCollatorWithPadding(tokenizer)
    test = classification_dataset(tokenizer, split.test[:300])
    majority = majority_share([record.label for record in split.test[:300]])
    stock_trainer(
        model, classification_dataset(tokenizer, split.train[:1600]), collate, tmp_path,
        {"lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"]}},
        max_steps=70, per_device_train_batch_size=16, learning_rate=2e-3, warmup_steps=7,
    ).train()
    accuracy = classification_accuracy(model, test, collate)
    assert accuracy >= max(0.65, majority + 0.05), f"{accuracy:.3f} (majority {majority:.3f})"


def test_lora_on_the_causal_lm_lowers_held_out_loss(tmp_path: Path) -> None:
    split = load_qa_pairs(test_size=200, seed=0)
    model, tokenizer = load_causal_lm()
    collate = CausalLMCollator(pad_token_id=tokenizer.pad_token_id)
    held_out = causal_lm_dataset(tokenizer, split.test[:32], max_length=64)
    before = causal_lm_loss(model, held_out, collate)
    stock_trainer(
        model, causal_lm_dataset(tokenizer, split.train, max_length=64), collate, tmp_path,
        {"lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}},
        max_steps=20, per_device_train_batch_size=4, learning_rate=1e-3, warmup_steps=2,
    ).train()
    after = causal_lm_loss(model, held_out, collate)
    assert after < before - 0.1, f"held-out loss {before:.3f} -> {after:.3f}"
