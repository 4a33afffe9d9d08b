"""Turn records into Trainer-ready examples (lists of token ids) and pad them per batch."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from peftplug.data.datasets import LabelledText, PromptCompletion

IGNORE_INDEX = -100  # the label value torch's cross-entropy (and the Trainer) skip


def classification_dataset(
    tokenizer: PreTrainedTokenizerBase, records: Sequence[LabelledText], max_length: int = 64
) -> list[dict[str, list[int] | int]]:
    """One unpadded example per record; pad per batch with ``DataCollatorWithPadding``."""
    encoded = tokenizer([r.text for r in records], truncation=True, max_length=max_length)
    wanted = ("input_ids", "attention_mask", "token_type_ids")
    columns = [name for name in wanted if name in encoded]
    return [
        {**{name: encoded[name][i] for name in columns}, "labels": record.label}
        for i, record in enumerate(records)
    ]


def chat_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """``prompt`` as a user turn, ending where the assistant's answer starts."""
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_example(
    tokenizer: PreTrainedTokenizerBase,
    record: PromptCompletion,
    shots: Sequence[PromptCompletion] = (),
) -> tuple[list[int], list[int]]:
    """The chat's token ids and labels scoring only the answer and its end-of-turn token.

    ``shots`` are earlier exchanges of the same chat (in-context examples); they are not scored.
    """
    earlier = [
        {"role": role, "content": text}
        for shot in shots
        for role, text in (("user", shot.prompt), ("assistant", shot.completion))
    ]
    prompt_messages = [*earlier, {"role": "user", "content": record.prompt}]
    prompt_text = tokenizer.apply_chat_template(
        prompt_messages, tokenize=False, add_generation_prompt=True
    )
    messages = [*prompt_messages, {"role": "assistant", "content": record.completion}]
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "the chat template renders the user turn differently once an answer follows, so the "
            "prompt tokens cannot be masked; use a tokenizer whose template appends each turn"
        )
    # tokenized apart, so the prompt's ids are exactly the ones the model sees when generating
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    # score up to the end-of-turn token (the model must learn to stop), not the template after it
    eos = tokenizer.eos_token_id
    scored = len(answer_ids)
    if eos in answer_ids:
        scored = len(answer_ids) - answer_ids[::-1].index(eos)
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids[:scored]
    labels += [IGNORE_INDEX] * (len(answer_ids) - scored)
    return prompt_ids + answer_ids, labels


def causal_lm_dataset(
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[PromptCompletion],
    max_length: int = 128,
    shots: Sequence[PromptCompletion] = (),
) -> list[dict[str, list[int]]]:
    """Chat-formatted examples, loss on the answer tokens only, truncated to ``max_length``.

    ``shots`` open every chat as earlier exchanges (in-context examples). A record whose prompt
    alone fills ``max_length`` has nothing left to score and is skipped (with a warning): an
    all-ignored example gives a NaN loss when it is alone in a batch.
    """
    examples: list[dict[str, list[int]]] = []
    for record in records:
        input_ids, labels = chat_example(tokenizer, record, shots)
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            continue
        examples.append(
            {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
        )
    if skipped := len(records) - len(examples):
        warnings.warn(
            f"skipped {skipped} of {len(records)} records whose prompt fills max_length="
            f"{max_length}, leaving no answer tokens; raise max_length to keep them",
            stacklevel=2,
        )
    return examples


@dataclass(frozen=True)
class CausalLMCollator:
    """Pad a batch to its longest example: ids with ``pad_token_id``, mask with 0, labels -100."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_values = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        batch: dict[str, torch.Tensor] = {}
        for name, pad in pad_values.items():
            if name not in features[0]:
                continue
            rows = [list(f[name]) + [pad] * (longest - len(f[name])) for f in features]
            batch[name] = torch.tensor(rows, dtype=torch.long)
        return batch
