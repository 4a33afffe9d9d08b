"""Held-out metrics: classification accuracy and causal-LM loss, in eval mode, without grad."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn


def _batches(
    dataset: Sequence[dict[str, Any]], collate: Callable[[list], dict], batch_size: int
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Batches of examples of similar length (less padding), each with its examples' indices."""
    order = sorted(range(len(dataset)), key=lambda index: len(dataset[index]["input_ids"]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        yield indices, collate([dataset[index] for index in indices])


def _in_dataset_order(pairs: list[tuple[int, Any]]) -> list[Any]:
    return [value for _, value in sorted(pairs, key=lambda pair: pair[0])]


def classification_outcomes(
    model: nn.Module,
    dataset: Sequence[dict[str, Any]],
    collate: Callable[[list], dict],
    batch_size: int = 64,
) -> tuple[list[bool], list[float]]:
    """Per example: whether its arg-max logit is its label, and its cross-entropy (nats)."""
    was_training = model.training
    model.eval()
    outcomes: list[tuple[int, tuple[bool, float]]] = []
    with torch.no_grad():
        for indices, batch in _batches(dataset, collate, batch_size):
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            hits = (logits.argmax(dim=-1) == labels).tolist()
            losses = nn.functional.cross_entropy(logits, labels, reduction="none").tolist()
            outcomes += zip(indices, zip(hits, losses, strict=True), strict=True)
    model.train(was_training)
    hits, losses = zip(*_in_dataset_order(outcomes), strict=True) if outcomes else ((), ())
    return list(hits), list(losses)


def classification_accuracy(
    model: nn.Module,
    dataset: Sequence[dict[str, Any]],
    collate: Callable[[list], dict],
    batch_size: int = 64,
) -> float:
    """Share of examples whose arg-max logit is the label."""
    hits, _ = classification_outcomes(model, dataset, collate, batch_size)
    return sum(hits) / len(hits)


def causal_lm_example_losses(
    model: nn.Module,
    dataset: Sequence[dict[str, Any]],
    collate: Callable[[list], dict],
    batch_size: int = 8,
) -> list[tuple[float, int]]:
    """Per example: the summed cross-entropy of its scored tokens, and how many there are.

    Logits for positions before the inputs (HF PEFT's prompt methods return one per virtual
    token) are left out: the last ``len(input_ids)`` positions are the inputs'.
    """
    was_training = model.training
    model.eval()
    losses: list[tuple[int, tuple[float, int]]] = []
    with torch.no_grad():
        for indices, batch in _batches(dataset, collate, batch_size):
            labels = batch.pop("labels")
            logits = model(**batch).logits[:, -labels.shape[1] : -1].float()
            targets = labels[:, 1:]
            per_token = nn.functional.cross_entropy(
                logits.transpose(1, 2), targets, ignore_index=-100, reduction="none"
            )
            scored = targets != -100
            sums = zip(per_token.sum(dim=1).tolist(), scored.sum(dim=1).tolist(), strict=True)
            losses += zip(indices, sums, strict=True)
    model.train(was_training)
    return _in_dataset_order(losses)


def causal_lm_loss(
    model: nn.Module,
    dataset: Sequence[dict[str, Any]],
    collate: Callable[[list], dict],
    batch_size: int = 8,
) -> float:
    """Mean cross-entropy per scored token (labels of -100 are skipped)."""
    return per_token_mean(causal_lm_example_losses(model, dataset, collate, batch_size))


def per_token_mean(losses: Sequence[tuple[float, int]]) -> float:
    """The summed losses over the summed token counts (``causal_lm_example_losses``' pairs)."""
    return sum(loss for loss, _ in losses) / max(sum(tokens for _, tokens in losses), 1)
