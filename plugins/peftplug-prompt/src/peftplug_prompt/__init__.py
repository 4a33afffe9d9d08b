"""Prompt tuning for peftplug: trainable virtual tokens prepended to the input embeddings.

``peftplug_prompt.virtual_tokens`` is the shared base of every virtual-token method.
"""

from peftplug_prompt.config import PromptConfig
from peftplug_prompt.layer import PromptEmbedding, SoftPrompt
from peftplug_prompt.mechanism import prompt_layer
from peftplug_prompt.method import PROMPT_TUNING, PromptTuning

__all__ = [
    "PROMPT_TUNING",
    "PromptConfig",
    "PromptEmbedding",
    "PromptTuning",
    "SoftPrompt",
    "prompt_layer",
]
