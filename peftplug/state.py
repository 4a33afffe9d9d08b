"""What peftplug records on a model it has patched."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from peftplug.config import MethodConfig
from peftplug.contracts import MethodSpec
from peftplug.errors import PeftplugError
from peftplug.layers import AdapterLayer

STATE_ATTRIBUTE = "_peftplug_state"


@dataclasses.dataclass
class AppliedMethod:
    """One method applied under one adapter name, and how to take it off again.

    ``layers`` are the adapter layers holding this adapter for this method, recorded as objects
    (not paths) so that a layer wrapped later by another method is still found.
    """

    spec: MethodSpec
    config: MethodConfig
    adapter_name: str
    undo: list[Callable[[], None]] = dataclasses.field(default_factory=list)
    layers: list[AdapterLayer] = dataclasses.field(default_factory=list)

    def record(self) -> dict:
        """The JSON description written into adapter files and ``model.config``."""
        return {
            **self.spec.record(),
            "adapter_name": self.adapter_name,
            "config": self.config.to_dict(),
        }


@dataclasses.dataclass
class PeftState:
    """All methods applied to a model, the active adapter and the flags to restore."""

    original_requires_grad: dict[str, bool]
    active_adapter: str
    methods: list[AppliedMethod] = dataclasses.field(default_factory=list)
    original_keys_to_ignore_on_save: object = None
    base_fingerprint: dict[str, dict[str, Any]] | None = None  # the base as first applied to

    @property
    def adapter_names(self) -> list[str]:
        """Adapter names in the order they were added."""
        return list(dict.fromkeys(m.adapter_name for m in self.methods))


def peft_state(model: nn.Module) -> PeftState | None:
    """The state of a patched model, or ``None`` for a plain one."""
    return getattr(model, STATE_ATTRIBUTE, None)


def require_state(model: nn.Module) -> PeftState:
    """The model's peftplug state, or an error saying how to get one."""
    state = peft_state(model)
    if state is None:
        raise PeftplugError(
            "this model has no peftplug methods applied: call peftplug.apply(model, [...]) "
            "or train it with PeftArguments(peft_plugins=[...]) first"
        )
    return state


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    """Every adapter layer in the model, with its name."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module
