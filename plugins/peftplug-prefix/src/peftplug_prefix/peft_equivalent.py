"""Prefix tuning's HF PEFT equivalent: ``PrefixTuningConfig`` and PEFT's table of prefixes."""

from __future__ import annotations

import torch

from peftplug import PeftEquivalent
from peftplug_prefix.config import PrefixConfig
from peftplug_prefix.layer import PrefixEncoder, PrefixKeyValues


def peft_prefix_table(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Keys and values [L, Hkv, P, D] as PEFT's table, [P, L * 2 * Hkv * D].

    PEFT views row ``p`` as [L * 2, Hkv, D] and gives layer ``l`` entry ``2l`` as its key and
    ``2l + 1`` as its value (``PeftModel.get_prompt``): row ``p`` holds position ``p`` of each
    layer's key, then value.
    """
    positions = keys.shape[2]
    return torch.stack([keys, values], 1).permute(3, 0, 1, 2, 4).reshape(positions, -1)


def peft_prefix_tuning(
    prefix: PrefixEncoder | PrefixKeyValues, config: PrefixConfig
) -> PeftEquivalent | None:
    """PEFT's prefix tuning without projection, its table holding the prefixes ``prefix`` gives.

    PEFT saves every prefix adapter as that table (``prompt_embeddings``: its MLP's output when
    ``prefix_projection``), so an adapter with an MLP exports folded, as what the file holds: a
    prefix without projection. Keys and values of different sizes have no place in PEFT's
    table (``None``).
    """
    with torch.no_grad():
        keys, values = prefix.all_layers()
    if keys.shape != values.shape:
        return None
    fields = {
        "peft_type": "PREFIX_TUNING",
        "num_virtual_tokens": config.num_virtual_tokens,
        "prefix_projection": False,
    }
    table = peft_prefix_table(keys, values)
    return PeftEquivalent(fields, {"prompt_encoder.default.embedding.weight": table})
