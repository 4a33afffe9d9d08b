"""The prompt encoder: learned embeddings reparameterised through an MLP or an LSTM."""

from __future__ import annotations

import torch
from peftplug_prompt import SoftPrompt
from torch import nn

from peftplug_ptuning.config import PTuningConfig


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (inputs, outputs) in enumerate(zip(sizes, sizes[1:], strict=False)):
        if index:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*layers)


class PromptEncoder(nn.Module):
    """``forward()`` returns ``embedding + encoder(embedding)``, ``(tokens, dim)``.

    The encoder's last layer starts at zero, so the virtual tokens start at their initial
    embeddings (sampled vocabulary rows or a text) and the model starts where it was told to,
    not at the encoder's random output.
    """

    def __init__(self, initial: torch.Tensor, config: PTuningConfig) -> None:
        super().__init__()
        dim, width = initial.shape[1], config.encoder_hidden_size
        self.embedding = nn.Parameter(initial)
        self.lstm: nn.LSTM | None = None
        if config.encoder == "lstm":
            self.lstm = nn.LSTM(dim, width, num_layers=2, bidirectional=True, batch_first=True)
            self.head = _mlp([2 * width, 2 * width, dim])
        else:
            self.head = _mlp([dim, width, width, dim])
        self.to(device=initial.device, dtype=initial.dtype)
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self) -> torch.Tensor:
        hidden = self.embedding
        if self.lstm is not None:
            hidden = self.lstm(hidden.unsqueeze(0))[0].squeeze(0)
        return self.embedding + self.head(hidden)

    def folded(self) -> SoftPrompt:
        """The virtual tokens this encoder produces, as fixed tokens that train as it did."""
        tokens = SoftPrompt(self().detach().clone())
        tokens.requires_grad_(self.embedding.requires_grad)
        return tokens
