"""P-tuning's options."""

from __future__ import annotations

import dataclasses
from typing import Literal

from peftplug_prompt.virtual_tokens import EncodedVirtualTokenConfig


@dataclasses.dataclass
class PTuningConfig(EncodedVirtualTokenConfig):
    """P-tuning (Liu et al. 2021): virtual tokens = a prompt encoder over learned embeddings.

    ``encoder``: ``"mlp"`` (3 linear layers) or ``"lstm"`` (a 2-layer bidirectional LSTM and
    a 2-layer MLP head), of width ``encoder_hidden_size``. ``folded`` is set by
    ``peftplug_ptuning.fold(model)``: the encoder is gone and the virtual tokens are a fixed
    tensor (an adapter saved after folding loads folded).
    """

    method = "ptuning"

    encoder: Literal["mlp", "lstm"] = "mlp"
