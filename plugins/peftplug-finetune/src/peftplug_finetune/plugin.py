"""peftplug hook implementations for full, partial and head-only fine-tuning."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from peftplug import MethodSpec, hookimpl
from peftplug.in_place import Owner, in_place_tensors, train_in_place
from peftplug_finetune.cached_backbone import CachedBackbone, cacheable_backbone
from peftplug_finetune.config import FullConfig, HeadConfig, PartialConfig
from peftplug_finetune.feature_cache import FeatureCache
from peftplug_finetune.selection import saved_modules, trained_parameters


@hookimpl
def peftplug_register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(
        MethodSpec(
            "full",
            FullConfig,
            "Full fine-tuning: every parameter trains",
            comparison={"learning_rate": 1e-4, "baseline": True},
            starts_at_base=True,
            trains_in_place=True,
        )
    )
    register(
        MethodSpec(
            "partial",
            PartialConfig,
            "Train the last k transformer blocks and/or named modules",
            comparison={"learning_rate": 3e-4, "options": {"last_k": 2}},
            starts_at_base=True,
            trains_in_place=True,
        )
    )
    register(
        MethodSpec(
            "head",
            HeadConfig,
            "Train only the task head on a frozen backbone",
            comparison={"learning_rate": 1e-2, "baseline": True},
            starts_at_base=True,
        )
    )


@hookimpl
def peftplug_prepare_model(
    model: nn.Module, config: object, adapter_name: str
) -> Callable[[], None] | None:
    if not isinstance(config, FullConfig | PartialConfig | HeadConfig):
        return None
    trained = trained_parameters(model, config)
    caching = isinstance(config, HeadConfig) and config.cache_features
    backbone = cacheable_backbone(model) if caching else None
    release = train_in_place(model, Owner(config.method, adapter_name), trained)
    if backbone is None:
        return release
    uninstall = CachedBackbone(backbone, FeatureCache(config.cache_max_bytes)).install()

    def undo() -> None:
        uninstall()
        release()

    return undo


@hookimpl
def peftplug_modules_to_save(
    model: nn.Module, config: object, adapter_name: str
) -> list[str] | None:
    if not isinstance(config, FullConfig | PartialConfig | HeadConfig):
        return None
    return saved_modules(model, config)


@hookimpl
def peftplug_state_dict(
    model: nn.Module, config: object, adapter_name: str
) -> dict[str, torch.Tensor] | None:
    if not isinstance(config, FullConfig | PartialConfig | HeadConfig):
        return None
    return in_place_tensors(model, Owner(config.method, adapter_name))
