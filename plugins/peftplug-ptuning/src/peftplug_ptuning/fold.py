"""Fold trained prompt encoders into fixed virtual tokens for inference."""

from __future__ import annotations

import torch
from torch import nn

from peftplug.apply import refresh_config_record, require_state
from peftplug_prompt import SoftPrompt, prompt_layer
from peftplug_ptuning.config import PTuningConfig


def fold(model: nn.Module) -> nn.Module:
    """Replace every P-tuning adapter's encoder by the virtual tokens it produces, in place.

    Outputs do not change; the encoder's weights are dropped, so the adapter saves as
    ``num_virtual_tokens x hidden_size`` numbers and runs without the encoder. The config is
    marked ``folded`` so a saved adapter loads folded. Training a folded adapter trains the
    tokens directly (prompt tuning). Returns ``model``.
    """
    state = require_state(model)
    layer = prompt_layer(model)
    for applied in state.methods:
        if not isinstance(applied.config, PTuningConfig) or applied.config.folded:
            continue
        name = applied.adapter_name
        encoder = layer.prompts[name]  # a PromptEncoder while not folded
        with torch.no_grad():
            tokens = SoftPrompt(encoder().detach().clone())
        tokens.embedding.requires_grad_(encoder.embedding.requires_grad)
        layer.prompts[name] = tokens
        applied.config.folded = True
    refresh_config_record(model)  # Trainer checkpoints describe the folded adapter
    return model
