"""The adapter layer that wraps the input embedding and holds each adapter's virtual tokens."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from peftplug import AdapterLayer


class SoftPrompt(nn.Module):
    """Fixed-shape trainable virtual tokens: ``forward()`` returns them, ``(tokens, dim)``."""

    def __init__(self, values: torch.Tensor) -> None:
        super().__init__()
        self.embedding = nn.Parameter(values)

    def forward(self) -> torch.Tensor:
        return self.embedding


class PromptEmbedding(AdapterLayer):
    """The model's input embedding plus, per adapter, a module producing its virtual tokens.

    ``forward`` embeds real tokens only (the base layer): the model-level pre-hook asks
    ``virtual_tokens()`` for the active adapter's prompt and prepends it. A prompt module is
    any module whose ``forward()`` returns ``(num_virtual_tokens, embedding_dim)``, so other
    methods (P-tuning's encoder) plug in their own.
    """

    mergeable = False
    not_mergeable_reason = (
        "a soft prompt adds input positions instead of changing a weight, so it cannot be "
        "folded into the base weights; keep the adapter applied for inference"
    )

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.prompts = nn.ModuleDict()

    @property
    def adapter_names(self) -> list[str]:
        return list(self.prompts.keys())

    def add_adapter(self, name: str, prompt: nn.Module) -> None:
        """Hold ``prompt`` as adapter ``name``'s virtual-token source."""
        self.prompts[name] = prompt

    def adapter_parameters(self, name: str) -> Iterator[nn.Parameter]:
        yield from self.prompts[name].parameters()

    def delete_adapter(self, name: str) -> None:
        del self.prompts[name]
        if self.active_adapter == name:
            self.active_adapter = None

    def virtual_tokens(self) -> torch.Tensor | None:
        """The active adapter's ``(tokens, dim)`` prompt in the embedding's dtype, or ``None``."""
        if not self.adapter_active():
            return None
        return self.prompts[self.active_adapter]().to(self.base_layer.weight.dtype)

    def forward(self, input_ids: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return self.base_layer(input_ids, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"adapters={self.adapter_names}"
