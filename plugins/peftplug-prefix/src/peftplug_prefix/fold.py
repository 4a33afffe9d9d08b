"""Fold trained reparameterisation MLPs into plain per-layer prefixes for inference."""

from __future__ import annotations

from peftplug_prompt.virtual_tokens import fold_encoders
from torch import nn

from peftplug_prefix.method import PREFIX_TUNING


def fold(model: nn.Module) -> nn.Module:
    """Replace every prefix adapter's MLP by the keys and values it produces, in place.

    Outputs do not change; the adapter then stores exactly ``2 x layers x num_virtual_tokens
    x kv_heads x head_dim`` numbers (plus the task head) and attention runs without the MLP.
    The config is marked ``folded`` so a saved adapter loads folded. Returns ``model``.
    """
    return fold_encoders(model, PREFIX_TUNING)
