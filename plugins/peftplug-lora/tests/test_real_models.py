"""LoRA on the shipped models through the stock Trainer: accuracy rises, held-out loss falls."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftplug.testing import load_causal_lm_workload, load_encoder_workload, majority_share

pytestmark = pytest.mark.slow


def test_lora_on_the_encoder_beats_chance_on_the_review_snippets(tmp_path: Path) -> None:
    reviews = load_encoder_workload(held_out_size=300, train_size=1600)
    majority = majority_share([example["labels"] for example in reviews.held_out])
    reviews.trainer(
        tmp_path, {"lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"]}},
        max_steps=70, per_device_train_batch_size=16, learning_rate=2e-3, warmup_steps=7,
    ).train()
    accuracy = reviews.accuracy()
    assert accuracy >= max(0.65, majority + 0.05), f"{accuracy:.3f} (majority {majority:.3f})"


def test_lora_on_the_causal_lm_lowers_held_out_loss(tmp_path: Path) -> None:
    qa = load_causal_lm_workload(held_out_size=32)
    before = qa.loss()
    qa.trainer(
        tmp_path, {"lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}},
        max_steps=20, per_device_train_batch_size=4, learning_rate=1e-3, warmup_steps=2,
    ).train()
    after = qa.loss()
    assert after < before - 0.1, f"held-out loss {before:.3f} -> {after:.3f}"
