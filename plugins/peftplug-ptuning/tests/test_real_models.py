"""P-tuning on the shipped models through the stock Trainer: accuracy rises, loss falls, folds."""

from __future__ import annotations

from pathlib import Path

import pytest

import peftplug
from peftplug.testing import load_causal_lm_workload, load_encoder_workload
from peftplug_ptuning import fold

pytestmark = pytest.mark.slow


def test_ptuning_on_the_encoder_improves_accuracy_and_folds(tmp_path: Path) -> None:
    reviews = load_encoder_workload(held_out_size=400, train_size=1600)
    model, before = reviews.model, reviews.accuracy()
    config = {"num_virtual_tokens": 20, "init": "text"}
    config["init_text"] = "Classify the sentiment of this review:"
    reviews.trainer(
        tmp_path, {"ptuning": config},
        max_steps=60, per_device_train_batch_size=16, learning_rate=3e-2, warmup_steps=6,
    ).train()
    after = reviews.accuracy()
    trainable = peftplug.trainable_parameters(model).trainable
    fold(model)
    assert reviews.accuracy() == after
    hidden, labels = model.config.hidden_size, model.config.num_labels
    assert peftplug.trainable_parameters(model).trainable == 20 * hidden + hidden * labels + labels
    adapter = peftplug.save_adapter(model, tmp_path / "adapter")
    size = (adapter / "adapter_model.safetensors").stat().st_size
    print(f"ptuning on the encoder: trainable {trainable}, folded adapter {size} bytes, "
          f"accuracy {before:.3f} -> {after:.3f}")
    assert after > before + 0.03, f"held-out accuracy {before:.3f} -> {after:.3f}"


def test_ptuning_on_the_causal_lm_lowers_loss_and_generates(tmp_path: Path) -> None:
    qa = load_causal_lm_workload(held_out_size=32)
    before = qa.loss()
    qa.trainer(tmp_path, {"ptuning": {"num_virtual_tokens": 20}}, max_steps=20,
               per_device_train_batch_size=4, learning_rate=1e-2, warmup_steps=2).train()
    fold(qa.model)
    after, answer = qa.loss(), qa.decode(qa.answer_ids())
    print(f"ptuning on the causal LM: held-out loss {before:.3f} -> {after:.3f}, "
          f"generated: {answer!r}")
    assert after < before - 0.1, f"held-out loss {before:.3f} -> {after:.3f}"
    assert answer.strip()
