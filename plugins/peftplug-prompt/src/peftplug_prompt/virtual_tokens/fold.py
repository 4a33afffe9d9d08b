"""Fold trained encoders into the fixed modules they produce, for inference."""

from __future__ import annotations

import torch
from torch import nn

from peftplug.apply import refresh_config_record, require_state
from peftplug_prompt.virtual_tokens.method import VirtualTokenMethod


def fold_encoders(model: nn.Module, method: VirtualTokenMethod) -> nn.Module:
    """Replace the encoder of each of ``method``'s adapters by ``encoder.folded()``, in place.

    ``method``'s config class is an ``EncodedVirtualTokenConfig``; an encoder's ``folded()``
    returns a module of fixed tensors with the same output, trainable if the encoder's
    embedding is. Outputs do not change. Each adapter's config is marked ``folded``, and
    ``model.config``'s record with it, so a saved adapter loads folded; folding twice changes
    nothing. Returns ``model``.
    """
    state = require_state(model)
    for applied in state.methods:
        config = applied.config
        if not isinstance(config, method.spec.config_class) or not config.has_encoder:
            continue
        modules = method.store(model).adapter_modules
        with torch.no_grad():
            modules[applied.adapter_name] = modules[applied.adapter_name].folded()
        config.folded = True
    refresh_config_record(model)  # Trainer checkpoints describe the folded adapter
    return model
