"""Prefix tuning as a virtual-token method: where its store lives, how it reaches attention.

The store (``model.peftplug_prefix``) holds every adapter's prefix module. Attaching it
switches the model to prefix attention (``peftplug_prefix.attention``), remembering the
implementation it had; each adapter's recording run points the attention modules at the store
(slots). Detaching the store removes the slots and restores the model's own attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peftplug_prompt.virtual_tokens import (
    VirtualTokenMethod,
    base_input_embedding,
    prompt_learning_options,
)
from torch import nn

from peftplug import MethodSpec, PeftEquivalent
from peftplug_prefix.attention import (
    attach_slots,
    detach_slots,
    restore_attention,
    switch_attention,
)
from peftplug_prefix.config import PrefixConfig
from peftplug_prefix.init import initial_prefix
from peftplug_prefix.layer import PrefixEncoder, PrefixKeyValues, PrefixStore
from peftplug_prefix.peft_equivalent import peft_prefix_tuning

STORE_ATTRIBUTE = "peftplug_prefix"
PREVIOUS_ATTRIBUTE = "_peftplug_prefix_previous_attention"
# PEFT's PrefixTuningConfig fields: its MLP and how it started, which its saved table replaces
PEFT_TABLE_FIELDS = {"prefix_projection", "encoder_hidden_size", "init_weights"}


def prefix_store(model: nn.Module) -> PrefixStore | None:
    """The model's prefix store, or ``None`` if no prefix is attached."""
    store = getattr(model, STORE_ATTRIBUTE, None)
    return store if isinstance(store, PrefixStore) else None


class PrefixTuning(VirtualTokenMethod):
    """Learned keys and values before every attention layer's keys, from a ``PrefixStore``."""

    spec = MethodSpec(
        "prefix",
        PrefixConfig,
        "Prefix tuning: learned keys and values in every layer",
        comparison={"learning_rate": 1e-2, "options": {"projection": False}},
        peft_type="PREFIX_TUNING",
    )
    param_group = "prefix"

    def store(self, model: nn.Module) -> PrefixStore | None:
        return prefix_store(model)

    def attach(self, model: nn.Module) -> PrefixStore:
        setattr(model, PREVIOUS_ATTRIBUTE, switch_attention(model))
        store = PrefixStore()
        setattr(model, STORE_ATTRIBUTE, store)
        return store

    def detach(self, model: nn.Module, store: PrefixStore) -> None:
        delattr(model, STORE_ATTRIBUTE)
        detach_slots(model)
        restore_attention(model, getattr(model, PREVIOUS_ATTRIBUTE))
        delattr(model, PREVIOUS_ATTRIBUTE)

    def build(self, model: nn.Module, config: PrefixConfig, store: PrefixStore) -> nn.Module:
        embedding = base_input_embedding(model)
        start = initial_prefix(model, embedding, config)
        attach_slots(store, start.modules)
        if config.has_encoder:
            hidden, width = embedding.weight.shape[1], config.encoder_hidden_size
            prefix = PrefixEncoder(start.keys, start.values, hidden, width)
        else:
            prefix = PrefixKeyValues(start.keys, start.values)
        return prefix.to(start.keys.device)

    def peft_training_config(self, model: nn.Module, config: PrefixConfig) -> dict[str, Any] | None:
        """PEFT's prefix tuning, with the reparameterisation MLP when ours has one."""
        hidden = config.encoder_hidden_size or model.config.hidden_size
        return {
            "peft_type": "PREFIX_TUNING",
            "num_virtual_tokens": config.num_virtual_tokens,
            "prefix_projection": config.projection,
            "encoder_hidden_size": hidden,
        }

    def peft_equivalent(
        self, model: nn.Module, config: PrefixConfig, adapter_name: str
    ) -> PeftEquivalent | None:
        """HF PEFT's prefix tuning holding this adapter's prefixes (``peft_prefix_tuning``)."""
        return peft_prefix_tuning(self.store(model).adapter_modules[adapter_name], config)

    def options_from_peft(self, peft_config: Mapping[str, Any]) -> dict[str, Any] | None:
        """PEFT's prefix tuning as PEFT saves it, its table of prefixes: no MLP.

        With ``prefix_projection`` the table is PEFT's MLP's output, so the adapter imports
        with the prefixes held directly either way (``projection=False``).
        """
        if peft_config.get("peft_type") != "PREFIX_TUNING":
            return None
        options = prompt_learning_options(peft_config, self.spec.name, PEFT_TABLE_FIELDS)
        return {**options, "projection": False}


PREFIX_TUNING = PrefixTuning()
