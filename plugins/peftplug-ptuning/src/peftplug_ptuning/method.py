"""P-tuning as a virtual-token method: prompt tuning's mechanism, tokens from an encoder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from peftplug_prompt import PromptEmbedding, PromptTuning, SoftPrompt
from peftplug_prompt.virtual_tokens import (
    base_input_embedding,
    initial_virtual_tokens,
    prompt_learning_options,
)
from torch import nn

from peftplug import MethodSpec, PeftEquivalent
from peftplug_ptuning.config import PTuningConfig
from peftplug_ptuning.encoder import PromptEncoder

# PEFT's PromptEncoderConfig fields: its encoder, which its file replaces by the tokens
PEFT_ENCODER_FIELDS = {
    "encoder_reparameterization_type",
    "encoder_hidden_size",
    "encoder_num_layers",
    "encoder_dropout",
}


class PTuning(PromptTuning):
    """Adapters in prompt tuning's ``PromptEmbedding``, each a ``PromptEncoder`` until folded."""

    spec = MethodSpec(
        "ptuning",
        PTuningConfig,
        "P-tuning: virtual input tokens from a prompt encoder",
        comparison={"learning_rate": 3e-2},
        peft_type="P_TUNING",
    )
    param_group = "ptuning_embedding"

    def build(self, model: nn.Module, config: PTuningConfig, store: PromptEmbedding) -> nn.Module:
        initial = initial_virtual_tokens(model, base_input_embedding(model), config)
        return SoftPrompt(initial) if config.folded else PromptEncoder(initial, config)

    def peft_training_config(
        self, model: nn.Module, config: PTuningConfig
    ) -> dict[str, Any] | None:
        """PEFT's P-tuning with an encoder of the same kind and width."""
        return {
            "peft_type": "P_TUNING",
            "num_virtual_tokens": config.num_virtual_tokens,
            "encoder_reparameterization_type": config.encoder.upper(),
            "encoder_hidden_size": config.encoder_hidden_size,
        }

    def peft_equivalent(
        self, model: nn.Module, config: PTuningConfig, adapter_name: str
    ) -> PeftEquivalent | None:
        """PEFT's P-tuning as PEFT saves it: the virtual tokens the encoder gives, folded or not.

        PEFT saves a P-tuning adapter as its encoder's output (``prompt_embeddings``), which it
        reads as the tokens in inference mode; our encoder (``embedding + encoder(embedding)``)
        has no place in PEFT's (``encoder(embedding)``), so the export builds PEFT's model in
        inference mode, its embedding holding the tokens.
        """
        with torch.no_grad():
            tokens = self.store(model).adapter_modules[adapter_name]()
        fields = {
            "peft_type": "P_TUNING",
            "num_virtual_tokens": config.num_virtual_tokens,
            "encoder_reparameterization_type": config.encoder.upper(),
            "encoder_hidden_size": config.encoder_hidden_size,
            "inference_mode": True,
        }
        return PeftEquivalent(fields, {"prompt_encoder.default.embedding.weight": tokens})

    def options_from_peft(self, peft_config: Mapping[str, Any]) -> dict[str, Any] | None:
        """PEFT's P-tuning as PEFT saves it, its encoder's tokens: a folded adapter.

        The encoder's type and width are kept as options (an export writes them back); no
        encoder is built.
        """
        if peft_config.get("peft_type") != "P_TUNING":
            return None
        options = prompt_learning_options(peft_config, self.spec.name, PEFT_ENCODER_FIELDS)
        encoder = peft_config.get("encoder_reparameterization_type", "MLP")
        options.update(
            folded=True, encoder=encoder.lower() if isinstance(encoder, str) else encoder
        )
        if peft_config.get("encoder_hidden_size") is not None:
            options["encoder_hidden_size"] = peft_config["encoder_hidden_size"]
        return options

    def no_decay_parameters(self, store: PromptEmbedding, adapter_name: str) -> list[nn.Parameter]:
        # the learned input embeddings are soft tokens; the encoder's layers decay as usual
        return [store.adapter_modules[adapter_name].embedding]


P_TUNING = PTuning()
