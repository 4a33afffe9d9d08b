"""Starting values of virtual tokens: sampled vocabulary rows, a text's embeddings, or noise."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoTokenizer

from peftplug import ConfigError
from peftplug_prompt.virtual_tokens.config import VirtualTokenConfig


def base_input_embedding(model: nn.Module) -> nn.Embedding:
    """The model's own input embedding, unwrapped if a virtual-token method wrapped it."""
    embedding = model.get_input_embeddings()
    return getattr(embedding, "base_layer", embedding)


def initial_virtual_tokens(
    model: nn.Module, embedding: nn.Embedding, config: VirtualTokenConfig
) -> torch.Tensor:
    """A ``(num_virtual_tokens, embedding_dim)`` fp32 tensor to start the prompt from."""
    weight = embedding.weight.detach()
    count = config.num_virtual_tokens
    if config.init == "random":
        std = weight.float().std()
        return torch.randn(count, weight.shape[1], device=weight.device) * std
    if config.init == "vocab":
        rows = torch.randint(0, weight.shape[0], (count,), device=weight.device)
    else:
        ids = text_token_ids(model, embedding, config)
        rows = torch.tensor((ids * -(-count // len(ids)))[:count], device=weight.device)
    return weight[rows].float().clone()


def text_token_ids(
    model: nn.Module, embedding: nn.Embedding, config: VirtualTokenConfig
) -> list[int]:
    """The token ids of ``init_text``, with the tokenizer the config or the model names."""
    source = config.tokenizer_name_or_path or getattr(
        getattr(model, "config", None), "_name_or_path", None
    )
    if not source:
        raise ConfigError(
            f"{config._label()} init='text' needs a tokenizer, and the model does not say where "
            "it came from: set 'tokenizer_name_or_path' to the tokenizer's directory or name"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{config._label()} init='text' could not load a tokenizer from {source!r} ({error}): "
            "set 'tokenizer_name_or_path' to a local tokenizer directory, or use init='vocab'"
        ) from None
    ids = tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(
            f"{config._label()} init_text {config.init_text!r} gives no tokens: "
            "use a non-empty text"
        )
    vocabulary = embedding.weight.shape[0]
    if max(ids) >= vocabulary:
        raise ConfigError(
            f"the tokenizer from {source!r} gives token id {max(ids)}, beyond this model's "
            f"{vocabulary} embeddings: set 'tokenizer_name_or_path' to the model's own tokenizer"
        )
    return ids
