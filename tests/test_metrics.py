"""Held-out metrics against the model's own loss, in any batch order, with prepended positions."""

from __future__ import annotations

import math

import torch
from torch import nn

from peftplug.metrics import causal_lm_example_losses, classification_outcomes, per_token_mean
from peftplug.testing.tiny_models import tiny_bert_classifier, tiny_llama

VOCAB = 64


def _collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Right-padding with the attention mask (labels -100 on padding)."""
    width = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for example in examples:
        pad = width - len(example["input_ids"])
        batch["input_ids"].append(example["input_ids"] + [0] * pad)
        batch["attention_mask"].append([1] * len(example["input_ids"]) + [0] * pad)
        labels = example["labels"]
        batch["labels"].append(labels + [-100] * pad if isinstance(labels, list) else labels)
    return {key: torch.tensor(value) for key, value in batch.items()}


def _lm_examples() -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    examples = []
    for length in (9, 3, 7, 5, 11, 4):
        ids = torch.randint(1, VOCAB, (length,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * 2 + ids[2:]})
    return examples


def test_per_example_losses_match_the_models_own_loss_one_example_at_a_time() -> None:
    """Length-sorted batches with padding give each example what it gets alone (fp32 rounding)."""
    model = tiny_llama().eval()
    examples = _lm_examples()
    losses = causal_lm_example_losses(model, examples, _collate, batch_size=4)
    for example, (total, tokens) in zip(examples, losses, strict=True):
        alone = _collate([example])
        with torch.no_grad():
            mean = model(**alone).loss.item()  # the model's own shift and mean over scored tokens
        assert tokens == len(example["input_ids"]) - 2  # labels from the third token, shifted
        assert math.isclose(total / tokens, mean, rel_tol=1e-5)
    assert per_token_mean(losses) > 0


class PrependsPositions(nn.Module):
    """A model whose logits start with positions of its own, as PEFT's prompt methods return."""

    def __init__(self, inner: nn.Module, extra: int) -> None:
        super().__init__()
        self.inner, self.extra = inner, extra

    def forward(self, **batch: torch.Tensor) -> object:
        logits = self.inner(**batch).logits
        noise = torch.randn(logits.shape[0], self.extra, logits.shape[2])
        return type("Output", (), {"logits": torch.cat([noise, logits], dim=1)})()


def test_positions_before_the_inputs_are_left_out() -> None:
    model = tiny_llama().eval()
    examples = _lm_examples()
    plain = causal_lm_example_losses(model, examples, _collate, batch_size=4)
    prepended = causal_lm_example_losses(PrependsPositions(model, 5), examples, _collate, 4)
    assert prepended == plain


def test_classification_outcomes_come_back_in_the_data_order() -> None:
    model = tiny_bert_classifier().eval()
    generator = torch.Generator().manual_seed(1)
    examples = [
        {
            "input_ids": torch.randint(5, 50, (length,), generator=generator).tolist(),
            "labels": label,
        }
        for length, label in ((9, 0), (3, 1), (12, 1), (5, 0), (7, 1))
    ]
    hits, losses = classification_outcomes(model, examples, _collate, batch_size=2)
    for example, hit, loss in zip(examples, hits, losses, strict=True):
        alone = _collate([example])
        with torch.no_grad():
            logits = model(
                input_ids=alone["input_ids"], attention_mask=alone["attention_mask"]
            ).logits
        expected = nn.functional.cross_entropy(logits, alone["labels"]).item()
        assert hit == (logits.argmax(-1).item() == example["labels"])
        assert math.isclose(loss, expected, rel_tol=1e-5, abs_tol=1e-6)
