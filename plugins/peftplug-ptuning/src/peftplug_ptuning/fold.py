"""Fold trained prompt encoders into fixed virtual tokens for inference."""

from __future__ import annotations

from peftplug_prompt.virtual_tokens import fold_encoders
from torch import nn

from peftplug_ptuning.method import P_TUNING


def fold(model: nn.Module) -> nn.Module:
    """Replace every P-tuning adapter's encoder by the virtual tokens it produces, in place.

    Outputs do not change; the encoder's weights are dropped, so the adapter saves as
    ``num_virtual_tokens x hidden_size`` numbers and runs without the encoder. The config is
    marked ``folded`` so a saved adapter loads folded. Training a folded adapter trains the
    tokens directly (prompt tuning). Returns ``model``.
    """
    return fold_encoders(model, P_TUNING)
