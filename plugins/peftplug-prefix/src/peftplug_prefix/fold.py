"""Fold trained reparameterisation MLPs into plain per-layer prefixes for inference."""

from __future__ import annotations

import torch
from torch import nn

from peftplug.apply import refresh_config_record, require_state
from peftplug_prefix.config import PrefixConfig
from peftplug_prefix.layer import PrefixKeyValues
from peftplug_prefix.mechanism import prefix_store


def fold(model: nn.Module) -> nn.Module:
    """Replace every prefix adapter's MLP by the keys and values it produces, in place.

    Outputs do not change; the adapter then stores exactly ``2 x layers x num_virtual_tokens
    x kv_heads x head_dim`` numbers (plus the task head) and attention runs without the MLP.
    The config is marked ``folded`` so a saved adapter loads folded. Returns ``model``.
    """
    state = require_state(model)
    store = prefix_store(model)
    for applied in state.methods:
        config = applied.config
        if not isinstance(config, PrefixConfig) or not config.projection or config.folded:
            continue
        encoder = store.prefixes[applied.adapter_name]
        with torch.no_grad():
            keys, values = (tensor.detach().clone() for tensor in encoder.all_layers())
        folded = PrefixKeyValues(keys, values)
        trains = encoder.embedding.requires_grad
        folded.requires_grad_(trains)
        store.prefixes[applied.adapter_name] = folded
        config.folded = True
    refresh_config_record(model)  # Trainer checkpoints describe the folded adapter
    return model
