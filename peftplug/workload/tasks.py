"""The model, tokenised data, collator and held-out metric of a workload."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from peftplug.data import (
    CausalLMCollator,
    causal_lm_dataset,
    causal_lm_path,
    classification_dataset,
    encoder_path,
    load_causal_lm,
    load_encoder,
)
from peftplug.data.datasets import PromptCompletion, Split
from peftplug.data.encode import IGNORE_INDEX
from peftplug.errors import ConfigError
from peftplug.metrics import causal_lm_example_losses, classification_outcomes, per_token_mean
from peftplug.workload.intervals import bootstrap_ratio_interval, majority_rate, wilson_interval
from peftplug.workload.model_dirs import load_from_directory
from peftplug.workload.options import Workload
from peftplug.workload.prepared_data import prepare_data

Example = dict[str, Any]


@dataclasses.dataclass
class LoadedTask:
    """Everything a row needs to train and evaluate one model."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    train: list[Example]
    test: list[Example]
    collate: Callable[[list[Example]], dict[str, torch.Tensor]]
    model_name: str
    data_name: str
    metric: str  # "accuracy" (higher is better) or "loss" (lower is better)
    data_notes: tuple[str, ...] = ()  # what reading and cleaning the data did
    split: Split[Any] | None = None  # the records behind train and test

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The held-out metric, its 95% interval, and the majority-class rate or perplexity.

        A classifier's ``loss`` is its mean cross-entropy: a short run's accuracy often ties
        where its loss already tells runs apart (the learning-rate search scores with it).
        """
        if self.metric == "accuracy":
            hits, losses = classification_outcomes(model, self.test, self.collate)
            return {
                "accuracy": sum(hits) / len(hits),
                "interval": list(wilson_interval(sum(hits), len(hits))),
                "majority_rate": majority_rate([int(e["labels"]) for e in self.test]),
                "loss": sum(losses) / len(losses),
            }
        losses = causal_lm_example_losses(model, self.test, self.collate)
        loss = per_token_mean(losses)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "interval": list(bootstrap_ratio_interval(losses)),
        }

    def latency_batch(self, size: int) -> dict[str, torch.Tensor]:
        """A fixed batch of held-out inputs (no labels) for latency measurements."""
        batch = self.collate(self.test[:size])
        batch.pop("labels", None)
        return batch


def load_task(workload: Workload) -> LoadedTask:
    """Load the workload's model and data, seeded, ready for the Trainer."""
    if workload.task == "classification":
        return _classification(workload)
    return _causal_lm(workload)


def _classification(workload: Workload) -> LoadedTask:
    data = prepare_data(workload)
    split = data.split
    labels = len(split.label_names)
    if workload.model is None:
        model, tokenizer = load_encoder(num_labels=labels, seed=workload.seed)
        model_name = f"all-MiniLM-L6-v2 ({encoder_path()})"
    else:
        torch.manual_seed(workload.seed)  # the fresh task head is initialised at random
        model = load_from_directory(
            AutoModelForSequenceClassification.from_pretrained,
            workload.model,
            "model",
            num_labels=labels,
        )
        tokenizer = load_from_directory(AutoTokenizer.from_pretrained, workload.model, "tokenizer")
        model_name = workload.model
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedTask(
        model=model,
        tokenizer=tokenizer,
        train=classification_dataset(tokenizer, split.train, workload.max_length),
        test=classification_dataset(tokenizer, split.test, workload.max_length),
        collate=DataCollatorWithPadding(tokenizer),
        model_name=model_name,
        data_name=data.name,
        data_notes=data.notes,
        split=split,
        metric="accuracy",
    )


def _causal_lm(workload: Workload) -> LoadedTask:
    data = prepare_data(workload)
    split = data.split
    if workload.model is None:
        model, tokenizer = load_causal_lm()
        model_name = f"SmolLM2-135M-Instruct ({causal_lm_path()})"
    else:
        model = load_from_directory(
            AutoModelForCausalLM.from_pretrained, workload.model, "model", dtype=torch.float32
        )
        tokenizer = load_from_directory(AutoTokenizer.from_pretrained, workload.model, "tokenizer")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        model_name = workload.model
    encode = _encoder(tokenizer)
    return LoadedTask(
        model=model,
        tokenizer=tokenizer,
        train=encode(tokenizer, split.train, workload.max_length),
        test=encode(tokenizer, split.test, workload.max_length),
        collate=CausalLMCollator(tokenizer.pad_token_id),
        model_name=model_name,
        data_name=data.name,
        data_notes=data.notes,
        split=split,
        metric="loss",
    )


def _encoder(tokenizer: PreTrainedTokenizerBase) -> Callable[..., list[Example]]:
    """Chat turns where the tokenizer has a chat template, else plain text."""
    return causal_lm_dataset if tokenizer.chat_template else plain_causal_lm_dataset


def with_shots(task: LoadedTask, shots: int, seed: int, max_length: int) -> LoadedTask:
    """The causal-LM task's held-out answers, each prompt preceded by ``shots`` training pairs.

    The pairs are drawn once with ``seed`` and open every held-out chat (in-context learning);
    the scored answers are the held-out ones, so the loss compares with the trained rows'.
    """
    if task.split is None or task.metric != "loss":
        raise ConfigError("in-context examples need a causal-LM task with prompt/answer pairs")
    if not 0 < shots <= len(task.split.train):
        raise ConfigError(
            f"--shots {shots}: choose between 1 and the {len(task.split.train)} training pairs"
        )
    examples = random.Random(seed).sample(task.split.train, shots)
    length = (shots + 1) * max_length  # room for the shots and the held-out pair
    test = _encoder(task.tokenizer)(task.tokenizer, task.split.test, length, examples)
    return dataclasses.replace(task, test=test)


def plain_causal_lm_dataset(
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[PromptCompletion],
    max_length: int,
    shots: Sequence[PromptCompletion] = (),
) -> list[Example]:
    """Without a chat template: ``prompt completion<eos>``, the loss on the completion only.

    ``shots`` come first, each as ``prompt completion<eos>`` too, unscored.
    """
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    opening = [
        token
        for shot in shots
        for token in tokenizer(f"{shot.prompt} {shot.completion}", add_special_tokens=False)[
            "input_ids"
        ]
        + eos
    ]
    examples: list[Example] = []
    for record in records:
        prompt = opening + tokenizer(record.prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(" " + record.completion, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            answer = answer + [tokenizer.eos_token_id]
        input_ids = (prompt + answer)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt) + answer)[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            continue
        examples.append(
            {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
        )
    if not examples:
        raise ConfigError(
            f"every prompt fills max_length={max_length}, leaving no completion tokens to "
            "score: raise --max-length"
        )
    return examples
