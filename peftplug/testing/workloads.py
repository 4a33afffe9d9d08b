"""The shipped real models with their data, encoded, ready to train and score in real-model tests.

Every plugin's real-model tests train the same two workloads: the encoder on the review snippets
(scored by held-out accuracy) and the causal LM on the QA pairs (scored by held-out loss). Loading
them here keeps those tests down to what they check: a method's options, its training, its numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase, Trainer

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
from peftplug.testing.training import stock_trainer


@dataclass(frozen=True)
class Workload:
    """A shipped model, its tokenizer and collator, and training and held-out examples for it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    collate: Callable[[list], dict]
    train: list[dict[str, Any]]
    held_out: list[dict[str, Any]]

    def trainer(
        self,
        output_dir: str | Path,
        methods: dict[str, dict[str, Any]] | None = None,
        **options: Any,
    ) -> Trainer:
        """``stock_trainer`` on this model, training examples and collator."""
        return stock_trainer(self.model, self.train, self.collate, output_dir, methods, **options)


@dataclass(frozen=True)
class EncoderWorkload(Workload):
    """The shipped encoder with a fresh two-way head, and review snippets encoded for it."""

    def accuracy(self) -> float:
        """The model's accuracy on the held-out snippets, as it stands now."""
        return classification_accuracy(self.model, self.held_out, self.collate)


@dataclass(frozen=True)
class CausalLMWorkload(Workload):
    """The shipped causal LM and QA pairs encoded for it, loss on the answers only."""

    question: str  # the first held-out prompt, as a chat turn awaiting the answer

    def loss(self) -> float:
        """The model's mean loss per answer token on the held-out pairs, as it stands now."""
        return causal_lm_loss(self.model, self.held_out, self.collate)

    def answer_ids(self, max_new_tokens: int = 12) -> torch.Tensor:
        """The greedy answer's new token ids (eval mode, no grad) to ``question``."""
        inputs = self.tokenizer(self.question, return_tensors="pt")
        with torch.no_grad():
            output = self.model.eval().generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False
            )
        return output[0, inputs["input_ids"].shape[1] :]

    def decode(self, ids: torch.Tensor) -> str:
        """``ids`` as text, special tokens left out."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def load_encoder_workload(
    held_out_size: int, train_size: int | None = None, max_length: int = 64
) -> EncoderWorkload:
    """The encoder (head seeded with 0) and the review split's first ``train_size`` (default: all)
    training and first ``held_out_size`` held-out snippets, truncated to ``max_length`` tokens."""
    split = load_reviews()
    model, tokenizer = load_encoder()
    return EncoderWorkload(
        model=model,
        tokenizer=tokenizer,
        collate=DataCollatorWithPadding(tokenizer),
        train=classification_dataset(tokenizer, split.train[:train_size], max_length),
        held_out=classification_dataset(tokenizer, split.test[:held_out_size], max_length),
    )


def load_causal_lm_workload(
    held_out_size: int, train_size: int | None = None, max_length: int = 64
) -> CausalLMWorkload:
    """The causal LM (float32) and the QA split's first ``train_size`` (default: all) training and
    first ``held_out_size`` held-out pairs, truncated to ``max_length`` tokens."""
    split = load_qa_pairs()
    model, tokenizer = load_causal_lm()
    return CausalLMWorkload(
        model=model,
        tokenizer=tokenizer,
        collate=CausalLMCollator(pad_token_id=tokenizer.pad_token_id),
        train=causal_lm_dataset(tokenizer, split.train[:train_size], max_length=max_length),
        held_out=causal_lm_dataset(tokenizer, split.test[:held_out_size], max_length=max_length),
        question=chat_prompt(tokenizer, split.test[0].prompt),
    )
