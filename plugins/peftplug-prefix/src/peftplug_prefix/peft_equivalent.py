"""Prefix tuning's HF PEFT equivalent: ``PrefixTuningConfig`` and PEFT's table of prefixes."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from peftplug import PeftEquivalent
from peftplug_prefix.config import PrefixConfig
from peftplug_prefix.layer import PrefixEncoder, PrefixKeyValues

TABLE = "prompt_encoder.default.embedding.weight"  # PEFT's model name of the table


def peft_prefix_table(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Keys and values [L, Hkv, P, D] as PEFT's table, [P, L * 2 * Hkv * D].

    PEFT views row ``p`` as [L * 2, Hkv, D] and gives layer ``l`` entry ``2l`` as its key and
    ``2l + 1`` as its value (``PeftModel.get_prompt``): row ``p`` holds position ``p`` of each
    layer's key, then value.
    """
    positions = keys.shape[2]
    return torch.stack([keys, values], 1).permute(3, 0, 1, 2, 4).reshape(positions, -1)


def keys_values_of_table(
    table: torch.Tensor, shape: torch.Size
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of ``peft_prefix_table``: PEFT's table as keys and values of ``shape``."""
    layers, kv_heads, positions, dim = shape
    both = table.reshape(positions, layers, 2, kv_heads, dim).permute(1, 2, 3, 0, 4)
    return both[:, 0], both[:, 1]


def peft_prefix_tuning(
    prefix: PrefixEncoder | PrefixKeyValues, config: PrefixConfig
) -> PeftEquivalent | None:
    """PEFT's prefix tuning without projection, its table holding the prefixes ``prefix`` gives.

    PEFT saves every prefix adapter as that table (``prompt_embeddings``: its MLP's output when
    ``prefix_projection``), so an adapter with an MLP exports folded, as what the file holds: a
    prefix without projection. Keys and values of different sizes have no place in PEFT's
    table (``None``). Prefixes held directly load from a table (``import_peft``); an MLP does
    not (an import builds none).
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
    table = {TABLE: peft_prefix_table(keys, values)}
    if isinstance(prefix, PrefixEncoder):
        return PeftEquivalent(fields, table)

    def load(saved: Mapping[str, torch.Tensor]) -> None:
        key, value = keys_values_of_table(saved[TABLE], prefix.key.shape)
        prefix.key.copy_(key)
        prefix.value.copy_(value)

    return PeftEquivalent(fields, table, load)
