"""For tests that run HF PEFT's prefix tuning as an oracle."""

from __future__ import annotations

import inspect

import torch
from torch import nn


def show_peft_the_cache_parameter(backbone: nn.Module) -> None:
    """Let HF PEFT (0.21.2) find the KV-cache parameter of a classifier's backbone.

    PEFT prefix-tunes a classifier only if ``inspect.signature(backbone.forward)`` has a
    parameter named ``past_key_values``; transformers 5.24 renamed it ``cache`` (the old keyword
    is still accepted, but no longer in the signature). Give the forward the old name, passed on
    as ``cache``, so PEFT's own code (its cache, pooler and head) runs unchanged.
    """
    forward = backbone.forward
    if "past_key_values" in inspect.signature(forward).parameters:  # transformers < 5.24
        return

    def forward_with_the_old_name(
        *args: object, past_key_values: object = None, **kwargs: object
    ) -> object:
        return forward(*args, cache=past_key_values, **kwargs)

    backbone.forward = forward_with_the_old_name


def as_in_peft_prefix(
    loaded: nn.Module, batch: dict[str, torch.Tensor], tokens: int
) -> dict[str, torch.Tensor]:
    """The ``position_ids`` that number our tokens as PEFT's prefix tuning does: its prefix is its
    KV cache, so the real tokens start at ``tokens`` (ours at 0). Also lets ``loaded`` (PEFT's
    model) find a classifier's cache parameter, renamed by transformers 5.24."""
    if hasattr(loaded.base_model, "classifier"):
        show_peft_the_cache_parameter(
            loaded.base_model.get_submodule(loaded.transformer_backbone_name)
        )
    batch_size, length = batch["input_ids"].shape
    return {"position_ids": torch.arange(tokens, tokens + length).expand(batch_size, -1)}
