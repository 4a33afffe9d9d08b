"""BitFit on the shipped models: exact counts, review sentiment through the stock Trainer, and
the bias-free SmolLM2 trained through its norms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import peftplug
from peftplug.data import load_causal_lm, load_encoder
from peftplug.testing import load_causal_lm_workload, load_encoder_workload, majority_share

pytestmark = pytest.mark.slow

# BASELINE.md's hand-made BitFit row: every bias + the 770-parameter head
MINILM_BITFIT_PARAMETERS = 26_882


def trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def numel(model: nn.Module, names: set[str]) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name in names)


def test_minilm_trains_exactly_every_bias_and_the_head() -> None:
    model, _ = load_encoder()
    expected = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    expected |= {f"classifier.{n}" for n, _ in model.classifier.named_parameters()}
    assert numel(model, expected) == MINILM_BITFIT_PARAMETERS
    peftplug.apply(model, ["bitfit"], {"bitfit": {}})
    body = {n for n in expected if not n.startswith("classifier.")}
    head_copy = {n.replace("classifier.", "classifier.modules_to_save.default.") for n in expected - body}
    assert trainable(model) == body | head_copy
    assert peftplug.trainable_parameters(model).trainable == MINILM_BITFIT_PARAMETERS


def test_minilm_reduced_variant_counts_query_value_and_intermediate_biases() -> None:
    model, _ = load_encoder()
    config = model.config
    targets = ["query", "value", "intermediate.dense"]
    peftplug.apply(model, ["bitfit"], {"bitfit": {"target_modules": targets}})
    per_layer = 2 * config.hidden_size + config.intermediate_size
    head = (config.hidden_size + 1) * config.num_labels
    assert peftplug.trainable_parameters(model).trainable == (
        config.num_hidden_layers * per_layer + head
    )


def test_bitfit_learns_review_sentiment_through_the_stock_trainer(tmp_path: Path) -> None:
    reviews = load_encoder_workload(held_out_size=500)
    trainer = reviews.trainer(
        tmp_path, {"bitfit": {}},
        max_steps=100, per_device_train_batch_size=16, learning_rate=3e-3, warmup_steps=10,
        lr_scheduler_type="constant_with_warmup",
    )
    before = reviews.accuracy()
    trainer.train()
    after = reviews.accuracy()
    majority = majority_share([row["labels"] for row in reviews.held_out])
    assert after > majority + 0.08, (before, after, majority)
    assert after > before + 0.15, (before, after)

    adapter = peftplug.save_adapter(trainer.model, tmp_path / "adapter")
    size = (adapter / "adapter_model.safetensors").stat().st_size
    assert 4 * MINILM_BITFIT_PARAMETERS <= size < 4 * MINILM_BITFIT_PARAMETERS + 16_384
    loaded = peftplug.load_adapter(load_encoder()[0], adapter).eval()
    inputs = reviews.collate(reviews.held_out[:64])
    inputs.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**inputs).logits, trainer.model.eval()(**inputs).logits, rtol=0, atol=0
        )


def test_smollm2_has_no_biases_so_bitfit_points_to_train_norms() -> None:
    model, _ = load_causal_lm()
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    with pytest.raises(peftplug.ConfigError, match=r"no bias terms.*train_norms=True"):
        peftplug.apply(model, ["bitfit"], {"bitfit": {}})


def test_train_norms_lowers_smollm2_held_out_loss(tmp_path: Path) -> None:
    qa = load_causal_lm_workload(held_out_size=32)
    model, config = qa.model, qa.model.config
    norms = {n for n, _ in model.named_parameters() if "norm" in n}
    assert numel(model, norms) == (2 * config.num_hidden_layers + 1) * config.hidden_size
    trainer = qa.trainer(
        tmp_path, {"bitfit": {"train_norms": True}},
        max_steps=20, per_device_train_batch_size=4, learning_rate=1e-2, warmup_steps=2,
    )
    assert trainable(trainer.model) == norms
    before = qa.loss()
    trainer.train()
    after = qa.loss()
    assert after < before - 0.2, (before, after)
