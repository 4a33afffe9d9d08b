"""The adapter layer that wraps the input embedding and holds each adapter's virtual tokens."""

from __future__ import annotations

import torch
from torch import nn

from peftplug_prompt.virtual_tokens import VirtualTokenStore


class SoftPrompt(nn.Module):
    """Fixed-shape trainable virtual tokens: ``forward()`` returns them, ``(tokens, dim)``."""

    def __init__(self, values: torch.Tensor) -> None:
        super().__init__()
        self.embedding = nn.Parameter(values)

    def forward(self) -> torch.Tensor:
        return self.embedding


class PromptEmbedding(VirtualTokenStore):
    """The model's input embedding plus, per adapter, a module producing its virtual tokens.

    ``forward`` embeds real tokens only (the base layer): the model-level pre-hook asks
    ``virtual_tokens()`` for the active adapter's prompt and prepends it. A prompt module is
    any module whose ``forward()`` returns ``(num_virtual_tokens, embedding_dim)``, so other
    methods (P-tuning's encoder) plug in their own.
    """

    modules_attribute = "prompts"
    not_mergeable_reason = (
        "a soft prompt adds input positions instead of changing a weight, so it cannot be "
        "folded into the base weights; keep the adapter applied for inference"
    )

    def virtual_tokens(self) -> torch.Tensor | None:
        """The active adapter's ``(tokens, dim)`` prompt in the embedding's dtype, or ``None``."""
        prompt = self.active_module()
        return None if prompt is None else prompt().to(self.base_layer.weight.dtype)

    def forward(self, input_ids: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return self.base_layer(input_ids, *args, **kwargs)
