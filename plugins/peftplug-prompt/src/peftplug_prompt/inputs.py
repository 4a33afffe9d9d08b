"""Rewrite a model's forward inputs so virtual tokens come first, for any HF-style model.

The rule, per input (B = batch, P = virtual tokens, L = real tokens):
- ``input_ids`` become ``inputs_embeds``: ``[prompt; embed(input_ids)]``, ``(B, P + L, H)``;
- ``attention_mask`` (2-D) gets P ones in front; ``token_type_ids`` P zeros;
- ``position_ids`` become ``[0 .. P-1, position_ids + P]``: the virtual tokens take the first
  positions (absolute positions in BERT/GPT-2, rotary in Llama);
- token-level ``labels`` ``(B, L)`` get P values of -100 in front and their first label masked,
  so a causal LM's (internally shifted) loss scores exactly the tokens it scores without the
  prompt; sequence-level labels ``(B,)`` are left alone.
With a non-empty KV cache (generation after the first step) the prompt is already in the
cache: nothing is prepended, the mask gets the P ones the caller does not know about, and
positions shift by P. The cache arrives as ``cache`` (transformers >= 5.24, whose ``generate``
passes that name) or ``past_key_values`` (earlier releases, and callers still using it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from peftplug.kv_cache import kv_cache

IGNORE_INDEX = -100


def cache_length(cache: Any) -> int:
    """Tokens already in a KV cache (a transformers ``Cache`` or the legacy tuple form)."""
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0][0].shape[-2]) if len(cache) else 0


def _prepend(tensor: torch.Tensor | None, count: int, value: int) -> torch.Tensor | None:
    if tensor is None:
        return None
    pad = torch.full((tensor.shape[0], count), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([pad, tensor], dim=1)


def _shift_positions(position_ids: torch.Tensor, count: int, prepend: bool) -> torch.Tensor:
    shifted = position_ids + count
    if not prepend:
        return shifted
    first = torch.arange(count, dtype=position_ids.dtype, device=position_ids.device)
    first = first.expand(*position_ids.shape[:-1], count)
    return torch.cat([first, shifted], dim=-1)


def with_virtual_tokens(
    inputs: dict[str, Any],
    prompt: torch.Tensor,
    embed: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[dict[str, Any], int]:
    """``inputs`` with ``prompt`` ``(P, H)`` prepended, and how many positions were added.

    Returns 0 added positions on cached generation steps (see the module docstring).
    """
    inputs = dict(inputs)
    count = prompt.shape[0]
    input_ids, embeds = inputs.get("input_ids"), inputs.get("inputs_embeds")
    if embeds is None:
        if input_ids is None:
            raise ValueError("a prompt-tuned model needs input_ids or inputs_embeds")
        embeds = embed(input_ids)
    new_tokens = embeds.shape[1]
    cached = cache_length(kv_cache(inputs))
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() != 2:
        raise ValueError(
            f"prompt tuning extends 2-D attention masks (batch, tokens); got a {mask.dim()}-D "
            "mask: pass the 2-D padding mask and let the model build its own"
        )
    if cached:
        if mask is not None and mask.shape[1] + count == cached + new_tokens:
            inputs["attention_mask"] = _prepend(mask, count, 1)
        if inputs.get("position_ids") is not None:
            inputs["position_ids"] = _shift_positions(inputs["position_ids"], count, prepend=False)
        return inputs, 0
    batch = embeds.shape[0]
    virtual = prompt.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
    inputs["input_ids"] = None
    inputs["inputs_embeds"] = torch.cat([virtual, embeds], dim=1)
    inputs["attention_mask"] = _prepend(mask, count, 1)
    inputs["token_type_ids"] = _prepend(inputs.get("token_type_ids"), count, 0)
    if inputs.get("position_ids") is not None:
        inputs["position_ids"] = _shift_positions(inputs["position_ids"], count, prepend=True)
    labels = inputs.get("labels")
    if labels is not None and labels.dim() >= 2 and labels.shape[1] == new_tokens:
        # the first real label is masked too: causal LMs shift labels by one inside the model, and
        # without the prompt nothing predicts the first token, so the loss scores the same tokens
        inputs["labels"] = _prepend(labels[:, 1:], count + 1, IGNORE_INDEX)
    for key in ("input_ids", "attention_mask", "token_type_ids", "position_ids"):
        if inputs.get(key) is None:
            inputs.pop(key, None)
    return inputs, count
