"""P-tuning as a virtual-token method: prompt tuning's mechanism, tokens from an encoder."""

from __future__ import annotations

import torch
from peftplug_prompt import PromptEmbedding, PromptTuning, SoftPrompt
from peftplug_prompt.virtual_tokens import base_input_embedding, initial_virtual_tokens
from torch import nn

from peftplug import MethodSpec, PeftEquivalent
from peftplug_ptuning.config import PTuningConfig
from peftplug_ptuning.encoder import PromptEncoder


class PTuning(PromptTuning):
    """Adapters in prompt tuning's ``PromptEmbedding``, each a ``PromptEncoder`` until folded."""

    spec = MethodSpec(
        "ptuning",
        PTuningConfig,
        "P-tuning: virtual input tokens from a prompt encoder",
        comparison={"learning_rate": 3e-2},
    )
    param_group = "ptuning_embedding"

    def build(self, model: nn.Module, config: PTuningConfig, store: PromptEmbedding) -> nn.Module:
        initial = initial_virtual_tokens(model, base_input_embedding(model), config)
        return SoftPrompt(initial) if config.folded else PromptEncoder(initial, config)

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

    def no_decay_parameters(self, store: PromptEmbedding, adapter_name: str) -> list[nn.Parameter]:
        # the learned input embeddings are soft tokens; the encoder's layers decay as usual
        return [store.adapter_modules[adapter_name].embedding]


P_TUNING = PTuning()
