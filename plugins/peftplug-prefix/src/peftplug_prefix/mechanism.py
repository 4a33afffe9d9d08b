"""Attach prefixes to a model and take them off: the store, the attention switch, the slots."""

from __future__ import annotations

from torch import nn

from peftplug import ConfigError
from peftplug_prefix.attention import (
    attach_slots,
    detach_slots,
    restore_attention,
    switch_attention,
)
from peftplug_prefix.layer import PrefixStore

STORE_ATTRIBUTE = "peftplug_prefix"
PREVIOUS_ATTRIBUTE = "_peftplug_prefix_previous_attention"


def prefix_store(model: nn.Module) -> PrefixStore | None:
    """The model's prefix store, or ``None`` if no prefix is attached."""
    store = getattr(model, STORE_ATTRIBUTE, None)
    return store if isinstance(store, PrefixStore) else None


def prepare_attention(model: nn.Module) -> None:
    """Switch the model to prefix attention (once), remembering what it used before."""
    if prefix_store(model) is None and not hasattr(model, PREVIOUS_ATTRIBUTE):
        setattr(model, PREVIOUS_ATTRIBUTE, switch_attention(model))


def add_prefix(
    model: nn.Module, adapter_name: str, prefix: nn.Module, modules: list[nn.Module]
) -> None:
    """Give ``model`` adapter ``adapter_name``'s prefixes for ``modules`` (in layer order)."""
    store = prefix_store(model)
    if store is None:
        store = PrefixStore()
        setattr(model, STORE_ATTRIBUTE, store)
        attach_slots(store, modules)
    elif adapter_name in store.prefixes:
        raise ConfigError(
            f"adapter {adapter_name!r} already has a prefix: apply the second one under "
            "another adapter_name"
        )
    store.add_adapter(adapter_name, prefix)


def remove_prefix(model: nn.Module, adapter_name: str) -> None:
    """Take one adapter's prefix off; the last one restores the model's own attention."""
    store = prefix_store(model)
    if store is not None and adapter_name in store.prefixes:
        store.delete_adapter(adapter_name)
    if store is not None and store.prefixes:
        return
    if store is not None:
        delattr(model, STORE_ATTRIBUTE)
        detach_slots(model)
    if hasattr(model, PREVIOUS_ATTRIBUTE):
        restore_attention(model, getattr(model, PREVIOUS_ATTRIBUTE))
        delattr(model, PREVIOUS_ATTRIBUTE)
