"""How prefixes reach every attention layer: an attention implementation of our own.

transformers 5 models call attention as ``ALL_ATTENTION_FUNCTIONS.get_interface(
config._attn_implementation, ...)(module, query, key, value, attention_mask, dropout=...,
scaling=..., **kwargs)`` and build masks with ``ALL_MASK_ATTENTION_FUNCTIONS[
config._attn_implementation]``. We register ``"peftplug_prefix"`` in both (the masks are
SDPA's: boolean, or ``None`` when ``is_causal`` suffices) and switch the model to it. Each
attention module of a prefixed model carries a ``PrefixSlot`` naming the store and its layer;
the function asks the store for that layer's prefix and calls
``torch.ops.peftplug.prefix_attention``. Modules without a slot (cross-attention) and calls
with no active prefix go to transformers' own SDPA function. No per-model code: BERT-, GPT-2-
and Llama-style models all reach attention this way. The key/value cache (``generate``) holds
only real keys; the prefix is a separate operand at every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from peftplug import PeftplugError
from peftplug.ops.prefix_attention import attend_with_prefix
from peftplug_prefix.layer import PrefixStore

IMPLEMENTATION = "peftplug_prefix"
SLOT_ATTRIBUTE = "_peftplug_prefix_slot"


@dataclasses.dataclass
class PrefixSlot:
    """What an attention module needs to find its prefix: the store and its layer index."""

    store: PrefixStore
    layer: int


@dataclasses.dataclass
class RecordedLayer:
    """The keys and values one attention layer computed for the first example of a forward."""

    module: nn.Module
    key: torch.Tensor
    value: torch.Tensor


_recording: ContextVar[list[RecordedLayer] | None] = ContextVar("_recording", default=None)


def prefix_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An ``AttentionInterface`` function: SDPA semantics plus the layer's prefix."""
    recording = _recording.get()
    slot = getattr(module, SLOT_ATTRIBUTE, None)
    prefix = None
    if recording is not None:
        recording.append(RecordedLayer(module, key[0].detach(), value[0].detach()))
    elif slot is not None:
        prefix = slot.store.layer_prefix(slot.layer)
    if prefix is None:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    for unsupported in ("softcap", "position_bias", "sinks", "s_aux"):
        if kwargs.get(unsupported) is not None:
            raise PeftplugError(
                f"{type(module).__name__} passes {unsupported!r} to attention, which prefix "
                "attention does not support; this model family cannot use prefix tuning yet"
            )
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    # as transformers' SDPA path: a missing mask means "causal" only for several queries
    causal = bool(causal and attention_mask is None and query.shape[2] > 1)
    prefix_key, prefix_value = (tensor.to(query.dtype) for tensor in prefix)
    out = attend_with_prefix(
        query,
        key,
        value,
        prefix_key,
        prefix_value,
        attention_mask,
        is_causal=causal,
        scale=scaling,
        dropout_p=dropout,
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(IMPLEMENTATION, prefix_attention_forward)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def switch_attention(model: nn.Module) -> str:
    """Make ``model`` call ``prefix_attention_forward``; returns the implementation it had."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    if previous is None or not callable(can_switch) or not can_switch():
        raise PeftplugError(
            f"prefix tuning reaches attention through transformers' AttentionInterface, and "
            f"{type(model).__name__} does not call attention through it: use a transformers "
            "model whose attention does (Llama, BERT, GPT-2, Mistral, Qwen2 ...)"
        )
    if previous != IMPLEMENTATION:
        model.set_attn_implementation(IMPLEMENTATION)
    return previous


def restore_attention(model: nn.Module, previous: str) -> None:
    """Put back the attention implementation ``switch_attention`` replaced."""
    model.set_attn_implementation(previous)


@contextlib.contextmanager
def recording() -> Iterator[list[RecordedLayer]]:
    """Inside the block, attention layers record their keys and values and add no prefix."""
    layers: list[RecordedLayer] = []
    token = _recording.set(layers)
    try:
        yield layers
    finally:
        _recording.reset(token)


def attach_slots(store: PrefixStore, modules: list[nn.Module]) -> None:
    """Point each attention module (in layer order) at its prefix in ``store``."""
    for index, module in enumerate(modules):
        setattr(module, SLOT_ATTRIBUTE, PrefixSlot(store, index))


def detach_slots(model: nn.Module) -> None:
    """Remove every attention module's slot."""
    for module in model.modules():
        if hasattr(module, SLOT_ATTRIBUTE):
            delattr(module, SLOT_ATTRIBUTE)
