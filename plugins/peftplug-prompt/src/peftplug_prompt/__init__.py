"""Prompt tuning for peftplug: trainable virtual tokens prepended to the input embeddings."""

from peftplug_prompt.config import PromptConfig, VirtualTokenConfig
from peftplug_prompt.init import initial_virtual_tokens
from peftplug_prompt.layer import PromptEmbedding, SoftPrompt
from peftplug_prompt.mechanism import add_prompt, prompt_layer, remove_prompt
from peftplug_prompt.tensors import head_parameters, virtual_token_tensors

__all__ = [
    "PromptConfig",
    "PromptEmbedding",
    "SoftPrompt",
    "VirtualTokenConfig",
    "add_prompt",
    "head_parameters",
    "initial_virtual_tokens",
    "prompt_layer",
    "remove_prompt",
    "virtual_token_tensors",
]
