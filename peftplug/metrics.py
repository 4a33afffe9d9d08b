"""Held-out metrics: classification accuracy and causal-LM loss, in eval mode, without grad."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


def _batches(
    dataset: Sequence[dict[str, Any]], collate: Callable[[list], dict], batch_size: int
) -> list[dict[str, torch.Tensor]]:
    return [collate(list(dataset[i : i + batch_size])) for i in range(0, len(dataset), batch_size)]


def classification_accuracy(
    model: nn.Module,
    dataset: Sequence[dict[str, Any]],
    collate: Callable[[list], dict],
    batch_size: int = 64,
) -> float:
    """Share of examples whose arg-max logit is the label."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in _batches(dataset, collate, batch_size):
            labels = batch.pop("labels")
            predictions = model(**batch).logits.argmax(dim=-1)
            correct += int((predictions == labels).sum())
    model.train(was_training)
    return correct / len(dataset)


def causal_lm_loss(
    model: nn.Module,
    dataset: Sequence[dict[str, Any]],
    collate: Callable[[list], dict],
    batch_size: int = 8,
) -> float:
    """Mean cross-entropy per scored token (labels of -100 are skipped)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in _batches(dataset, collate, batch_size):
            labels = batch.pop("labels")
            logits = model(**batch).logits[:, :-1].float()
            targets = labels[:, 1:]
            total += float(
                nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                    ignore_index=-100, reduction="sum",
                )
            )
            tokens += int((targets != -100).sum())
    model.train(was_training)
    return total / max(tokens, 1)
