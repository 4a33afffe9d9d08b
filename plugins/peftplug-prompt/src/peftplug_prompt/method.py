"""Prompt tuning as a virtual-token method: trainable tokens in the ``PromptEmbedding``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from peftplug import MethodSpec, PeftEquivalent
from peftplug_prompt.config import PromptConfig
from peftplug_prompt.layer import PromptEmbedding, SoftPrompt
from peftplug_prompt.mechanism import attach_prompt_layer, detach_prompt_layer, prompt_layer
from peftplug_prompt.virtual_tokens import (
    VirtualTokenConfig,
    VirtualTokenMethod,
    base_input_embedding,
    initial_virtual_tokens,
    prompt_learning_options,
)

# PEFT's PromptTuningConfig fields: how its tokens started, replaced by the saved ones
PEFT_INIT_FIELDS = {
    "prompt_tuning_init",
    "prompt_tuning_init_text",
    "tokenizer_name_or_path",
    "tokenizer_kwargs",
}


PEFT_INITS = {"vocab": "SAMPLE_VOCAB", "text": "TEXT", "random": "RANDOM"}


class PromptTuning(VirtualTokenMethod):
    """Virtual tokens prepended to the input embeddings (``peftplug_prompt.mechanism``).

    Other input-level methods subclass it and override ``build`` (P-tuning): their adapters
    share the ``PromptEmbedding`` with prompt tuning's, under different adapter names.
    """

    spec = MethodSpec(
        "prompt",
        PromptConfig,
        "Prompt tuning: trainable virtual input tokens",
        comparison={"learning_rate": 3e-2},
        peft_type="PROMPT_TUNING",
    )
    param_group = "soft_prompt"

    def store(self, model: nn.Module) -> PromptEmbedding | None:
        return prompt_layer(model)

    def attach(self, model: nn.Module) -> PromptEmbedding:
        return attach_prompt_layer(model)

    def detach(self, model: nn.Module, store: PromptEmbedding) -> None:
        detach_prompt_layer(model, store)

    def build(
        self, model: nn.Module, config: VirtualTokenConfig, store: PromptEmbedding
    ) -> nn.Module:
        return SoftPrompt(initial_virtual_tokens(model, base_input_embedding(model), config))

    def peft_training_config(
        self, model: nn.Module, config: VirtualTokenConfig
    ) -> dict[str, Any] | None:
        """PEFT's prompt tuning, its tokens started the same way (vocabulary, text or random)."""
        return {
            "peft_type": "PROMPT_TUNING",
            "num_virtual_tokens": config.num_virtual_tokens,
            "prompt_tuning_init": PEFT_INITS[config.init],
            "prompt_tuning_init_text": config.init_text,
            "tokenizer_name_or_path": config.tokenizer_name_or_path or model.name_or_path,
        }

    def peft_equivalent(
        self, model: nn.Module, config: VirtualTokenConfig, adapter_name: str
    ) -> PeftEquivalent | None:
        """PEFT's prompt tuning: the same tokens as its prompt encoder's embedding table."""
        tokens = self.store(model).adapter_modules[adapter_name].embedding
        fields = {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": config.num_virtual_tokens}
        return PeftEquivalent(fields, {"prompt_encoder.default.embedding.weight": tokens})

    def options_from_peft(self, peft_config: Mapping[str, Any]) -> dict[str, Any] | None:
        """PEFT's prompt tuning: the same tokens, however PEFT started them."""
        if peft_config.get("peft_type") != "PROMPT_TUNING":
            return None
        return prompt_learning_options(peft_config, self.spec.name, PEFT_INIT_FIELDS)


PROMPT_TUNING = PromptTuning()
