"""Prefix tuning's options."""

from __future__ import annotations

import dataclasses

from peftplug_prompt.virtual_tokens import EncodedVirtualTokenConfig

from peftplug import ConfigError


@dataclasses.dataclass
class PrefixConfig(EncodedVirtualTokenConfig):
    """Prefix tuning (Li & Liang 2021): learned keys and values before every layer's keys.

    ``num_virtual_tokens`` prefix positions per layer. ``init`` picks where they start: the
    keys and values the model itself computes for ``"vocab"`` (sampled vocabulary tokens) or
    ``"text"`` (``init_text``'s tokens), so the model starts as if it had read them; or
    ``"random"`` (standard normal, as HF PEFT). ``projection``: produce the prefixes with a
    reparameterisation MLP (embedding -> linear -> tanh -> per-layer keys and values) of width
    ``encoder_hidden_size`` while training; ``False`` trains the prefixes directly. ``folded``
    is set by ``peftplug_prefix.fold(model)``: the MLP is replaced by the prefixes it produces
    (an adapter saved after folding loads folded, without the MLP).
    """

    method = "prefix"

    projection: bool = True

    @property
    def has_encoder(self) -> bool:
        return self.projection and not self.folded

    def validate(self) -> None:
        super().validate()
        if self.folded and not self.projection:
            raise ConfigError(
                "prefix option folded=True only applies with projection=True (there is no MLP "
                "to fold otherwise): drop 'folded'"
            )
