"""Adapters to check against HF PEFT (the oracle): one case per method and model family."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import peftplug
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)

CASES: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "lora-bert-head": (tiny_bert_classifier, "lora", {"r": 4, "alpha": 8}),
    "lora-llama-rslora-all-linear": (
        tiny_llama,
        "lora",
        {"r": 4, "use_rslora": True, "target_modules": "all-linear"},
    ),
    "lora-gpt2-conv1d": (tiny_gpt2, "lora", {"r": 4, "target_modules": ["c_attn", "c_proj"]}),
    "dora-llama": (
        tiny_llama,
        "lora",
        {"r": 4, "use_dora": True, "target_modules": ["q_proj", "v_proj"]},
    ),
    "dora-bert-head": (tiny_bert_classifier, "lora", {"r": 4, "use_dora": True}),
    "prompt-llama": (tiny_llama, "prompt", {"num_virtual_tokens": 3, "init": "random"}),
    "prompt-bert-head": (tiny_bert_classifier, "prompt", {"num_virtual_tokens": 3}),
    "ptuning-llama-lstm": (
        tiny_llama,
        "ptuning",
        {"num_virtual_tokens": 3, "encoder": "lstm", "encoder_hidden_size": 16},
    ),
    "ptuning-bert-head-mlp": (
        tiny_bert_classifier,
        "ptuning",
        {"num_virtual_tokens": 3, "encoder_hidden_size": 16},
    ),
    "prefix-llama-mlp": (
        tiny_llama,
        "prefix",
        {"num_virtual_tokens": 3, "encoder_hidden_size": 16},
    ),
    "prefix-bert-head": (
        tiny_bert_classifier,
        "prefix",
        {"num_virtual_tokens": 3, "projection": False},
    ),
}


def batch_for(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tiny batch that fits ``model``: a classifier's or a causal LM's."""
    return classification_batch() if hasattr(model, "classifier") else causal_lm_batch()


def train(model: nn.Module, steps: int = 2) -> nn.Module:
    """A few SGD steps on what trains (the active adapter)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch_for(model)).loss.backward()
        optimizer.step()
    return model.eval()


def trained(make: Any, method: str, options: dict[str, Any]) -> nn.Module:
    """A model from ``make`` with ``method`` applied and trained a little."""
    return train(peftplug.apply(make(), [method], {method: options}))


def logits(model: nn.Module, batch: dict[str, torch.Tensor], **extra: torch.Tensor) -> torch.Tensor:
    """The model's logits on ``batch`` (its labels left out), in eval mode."""
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}, **extra).logits


def assert_same_as_peft(
    model: nn.Module,
    loaded: nn.Module,
    batch: dict[str, torch.Tensor],
    extra: dict[str, torch.Tensor],
) -> None:
    """PEFT's ``loaded`` gives ``model``'s logits (``extra``: our inputs that match PEFT's)."""
    ours, theirs = logits(model, batch, **extra), logits(loaded, batch)
    if theirs.shape != ours.shape:  # PEFT's causal LM keeps the virtual positions' logits
        theirs = theirs[:, theirs.shape[1] - ours.shape[1] :]
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
