"""Bottleneck adapters on the two shipped models, trained briefly through the stock Trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import peftplug
from peftplug.data import load_encoder
from peftplug.testing import load_causal_lm_workload, load_encoder_workload

pytestmark = pytest.mark.slow
# "fresh" is 55.7% of the held-out reviews: always answering it scores about that
ACCURACY_FLOOR = 0.68


def test_shipped_encoder_gains_the_houlsby_parameter_count() -> None:
    model, _ = load_encoder()
    peftplug.apply(model, ["adapter"], {"adapter": {"placement": "houlsby", "train_head": False}})
    d, blocks = model.config.hidden_size, model.config.num_hidden_layers
    assert (d, blocks) == (384, 6)
    m = d // 16
    assert peftplug.trainable_parameters(model).trainable == blocks * 2 * (2 * d * m + d + m)


def test_encoder_beats_chance_on_reviews_and_round_trips(tmp_path: Path) -> None:
    reviews = load_encoder_workload(held_out_size=300)
    trainer = reviews.trainer(
        tmp_path, {"adapter": {"placement": "houlsby"}},
        max_steps=70, per_device_train_batch_size=16, per_device_eval_batch_size=64,
        learning_rate=3e-3, warmup_steps=7,
    )
    trainer.train()
    predictions = trainer.predict(reviews.held_out)
    accuracy = (predictions.predictions.argmax(-1) == predictions.label_ids).mean()
    assert accuracy >= ACCURACY_FLOOR

    peftplug.save_adapter(trainer.model, tmp_path / "adapter")
    loaded = peftplug.load_adapter(load_encoder()[0], tmp_path / "adapter").eval()
    trainer.model.eval()
    batch = reviews.collate(reviews.held_out[:32])
    batch.pop("labels")
    with torch.no_grad():
        expected = trainer.model(**batch).logits
        torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=0)


def test_causal_lm_starts_at_the_base_loss_and_learns_the_qa_pairs(tmp_path: Path) -> None:
    qa = load_causal_lm_workload(held_out_size=32)
    base_loss = qa.loss()

    peftplug.apply(qa.model, ["adapter"], {"adapter": {"placement": "pfeiffer"}})
    assert qa.loss() == base_loss  # zero up-projection: no change
    qa.trainer(
        tmp_path, max_steps=20, per_device_train_batch_size=4, learning_rate=1e-3, warmup_steps=2,
    ).train()
    assert qa.loss() < base_loss - 0.3
