"""Prefix tuning on the shipped models through the stock Trainer: accuracy rises, loss falls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Trainer

import peftplug
from peftplug.testing import Workload, load_causal_lm_workload, load_encoder_workload

pytestmark = pytest.mark.slow


def _train(workload: Workload, tmp_path: Path, config: dict, **options: Any) -> Trainer:
    trainer = workload.trainer(tmp_path, {"prefix": config}, **options)
    started = time.perf_counter()
    trainer.train()
    print(f"\nprefix: {(time.perf_counter() - started) / trainer.args.max_steps:.3f} s/step")
    return trainer


def test_prefix_tuning_on_the_encoder_improves_accuracy(tmp_path: Path) -> None:
    reviews = load_encoder_workload(held_out_size=400, train_size=960)
    model, before = reviews.model, reviews.accuracy()
    config = {"num_virtual_tokens": 20, "init": "text", "projection": False}
    config["init_text"] = "Classify the sentiment of this review:"
    _train(
        reviews, tmp_path, config,
        max_steps=40, per_device_train_batch_size=16, learning_rate=1e-2, warmup_steps=4,
    )
    after = reviews.accuracy()
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    head_dim = model.config.hidden_size // heads
    head = sum(p.numel() for p in model.classifier.modules_to_save["default"].parameters())
    trainable = peftplug.trainable_parameters(model).trainable
    assert trainable == 2 * layers * 20 * heads * head_dim + head
    print(f"prefix on the encoder: trainable {trainable}, accuracy {before:.3f} -> {after:.3f}")
    assert after > before + 0.03, f"held-out accuracy {before:.3f} -> {after:.3f}"


def test_prefix_tuning_on_the_causal_lm_with_checkpointing_lowers_loss_and_generates(
    tmp_path: Path,
) -> None:
    qa = load_causal_lm_workload(held_out_size=32)
    before = qa.loss()
    trainer = _train(
        qa, tmp_path, {"num_virtual_tokens": 20, "projection": False}, gradient_checkpointing=True,
        max_steps=8, per_device_train_batch_size=4, learning_rate=1e-2, warmup_steps=1,
    )
    assert trainer.model.is_activation_checkpointing
    after = qa.loss()
    print(f"prefix on the causal LM: held-out loss {before:.3f} -> {after:.3f}")
    assert after < before - 0.1, f"held-out loss {before:.3f} -> {after:.3f}"
    answer = qa.answer_ids()
    with peftplug.disable_adapters(qa.model):
        plain = qa.answer_ids()
    text = qa.decode(answer)
    print(f"generated with the prefix: {text!r}; without: {qa.decode(plain)!r}")
    assert text.strip()
    assert not torch.equal(answer, plain)
