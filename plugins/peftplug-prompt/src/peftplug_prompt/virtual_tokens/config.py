"""Options every virtual-token method shares, and those of methods that fold an encoder away."""

from __future__ import annotations

import dataclasses
from typing import Literal

from peftplug import ConfigError, MethodConfig


@dataclasses.dataclass
class VirtualTokenConfig(MethodConfig):
    """Options every method that adds virtual tokens shares.

    ``init``: where the virtual tokens start: ``"vocab"`` (rows of the embedding matrix
    sampled at random), ``"text"`` (the embeddings of ``init_text``'s tokens, repeated or cut
    to ``num_virtual_tokens``; the tokenizer comes from ``tokenizer_name_or_path`` or else the
    model's ``config._name_or_path``) or ``"random"`` (normal, with the embedding matrix's std).
    ``train_head``: the task head of classification models trains (and is saved) too.
    """

    num_virtual_tokens: int = 20
    init: Literal["vocab", "text", "random"] = "vocab"
    init_text: str | None = None
    tokenizer_name_or_path: str | None = None
    train_head: bool = True

    def validate(self) -> None:
        label = self._label()
        if self.num_virtual_tokens < 1:
            raise ConfigError(
                f"{label} option 'num_virtual_tokens' must be at least 1 (20 is typical), "
                f"got {self.num_virtual_tokens}"
            )
        if self.init == "text" and not self.init_text:
            raise ConfigError(
                f"{label} option init='text' needs 'init_text', e.g. "
                "'Classify the sentiment of this review:'; or use init='vocab'"
            )
        if self.init != "text" and self.init_text is not None:
            raise ConfigError(
                f"{label} option 'init_text' is only used with init='text' (init is "
                f"{self.init!r}): set init='text' or drop init_text"
            )


@dataclasses.dataclass
class EncodedVirtualTokenConfig(VirtualTokenConfig):
    """Options of methods that train virtual tokens through an encoder, then fold it away.

    ``encoder_hidden_size``: the encoder's width. ``folded`` is set by ``fold_encoders`` (each
    method's ``fold(model)``), not by hand: the adapter holds the encoder's output and no
    encoder, and an adapter saved after folding loads folded.
    """

    encoder_hidden_size: int = 128
    folded: bool = False

    @property
    def has_encoder(self) -> bool:
        """Whether the adapter holds an encoder that folding would replace."""
        return not self.folded

    def validate(self) -> None:
        super().validate()
        if self.encoder_hidden_size < 1:
            raise ConfigError(
                f"{self._label()} option 'encoder_hidden_size' must be positive (128 is "
                f"typical), got {self.encoder_hidden_size}"
            )
