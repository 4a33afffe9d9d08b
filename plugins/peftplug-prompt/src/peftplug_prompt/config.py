"""Prompt tuning's options: those every virtual-token method shares."""

from __future__ import annotations

import dataclasses

from peftplug_prompt.virtual_tokens import VirtualTokenConfig


@dataclasses.dataclass
class PromptConfig(VirtualTokenConfig):
    """Prompt tuning (Lester et al. 2021): ``num_virtual_tokens`` trainable input embeddings."""

    method = "prompt"
