"""The options of full, partial and head-only fine-tuning."""

from __future__ import annotations

import dataclasses

from peftplug import ConfigError, MethodConfig


@dataclasses.dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning: every parameter of the model trains, in place (the baseline to beat).

    Saving writes every parameter, so an adapter is as large as the model.
    """


@dataclasses.dataclass
class PartialConfig(MethodConfig):
    """Train the last ``last_k`` transformer blocks and/or the named ``modules``, in place.

    ``last_k``: how many blocks, counted from the output end, train (0 trains none).
    ``modules``: module names that train in full; a name matches that path or any path ending
    with ``.<name>`` (e.g. ``"pooler"``, ``"lm_head"``, ``"model.norm"``).
    ``train_head``: also train the task head (``classifier``, ``score``, ``qa_outputs``) when the
    model has one; a causal LM has none (name its output layer in ``modules`` to train it).
    """

    last_k: int | None = None
    modules: list[str] = dataclasses.field(default_factory=list)
    train_head: bool = True

    def validate(self) -> None:
        if self.last_k is not None and self.last_k < 0:
            raise ConfigError(
                f"partial option 'last_k' must be 0 or more blocks, got {self.last_k}"
            )
        if self.last_k is None and not self.modules:
            raise ConfigError(
                "partial needs 'last_k' (e.g. 2: the last two blocks) and/or 'modules' to train; "
                "to train only the task head use the 'head' method"
            )
        if not self.last_k and not self.modules and not self.train_head:
            raise ConfigError(
                "partial with last_k=0, no modules and train_head=False trains nothing: "
                "set last_k above 0, name modules, or set train_head=True"
            )


@dataclasses.dataclass
class HeadConfig(MethodConfig):
    """Train only the task head on the frozen backbone (feature-based fine-tuning).

    ``train_output_layer``: on a model without a task head (a causal LM), train its output layer
    (``get_output_embeddings()``) instead; refused on models that have a task head.
    ``cache_features``: compute the backbone's output for each input row once and reuse it, so
    repeated inputs (later epochs) cost only the head. The backbone then always runs in eval
    mode without gradients; rows hit the cache only when their exact tensors repeat (pad to a
    fixed length, e.g. ``padding="max_length"``, so shuffled batches still match).
    ``cache_max_mb``: memory the cache may hold; rows beyond it are computed, not stored.
    """

    train_output_layer: bool = False
    cache_features: bool = False
    cache_max_mb: float = 1024.0

    def validate(self) -> None:
        if self.cache_max_mb <= 0:
            raise ConfigError(
                f"head option 'cache_max_mb' must be positive (megabytes the feature cache may "
                f"hold), got {self.cache_max_mb}; set cache_features=False to turn caching off"
            )

    @property
    def cache_max_bytes(self) -> int:
        """``cache_max_mb`` in bytes."""
        return int(self.cache_max_mb * 2**20)
