"""Put a model back exactly as it was when an apply or a load fails part-way.

A snapshot records, for every module, its attributes (with the containers that hold its
submodules, parameters, buffers and hooks copied one level deep) and every parameter's
``requires_grad`` flag. Restoring it undoes any structural change a plugin made (wrapped or
replaced modules, adapters added to existing layers, hooks, attributes) without copying a
single weight. Writing parameter values in place is the one change it cannot undo: hooks
must not do that while applying (see ``docs/hooks.md``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

from torch import nn

from peftplug.state import PeftState, peft_state


class ModelSnapshot:
    """The structure, attributes and trainable flags of a model at one instant."""

    def __init__(self, model: nn.Module) -> None:
        self._modules = [(module, _copy_attributes(vars(module))) for module in model.modules()]
        self._flags = [(p, p.requires_grad) for p in model.parameters()]
        state = peft_state(model)
        self._state = (state, _copy_state(state)) if state is not None else None
        config = getattr(model, "config", None)
        self._config = (config, dict(vars(config))) if config is not None else None

    def restore(self) -> None:
        """Put every recorded module, flag and record back as it was."""
        for module, attributes in self._modules:
            vars(module).clear()
            vars(module).update(_copy_attributes(attributes))
        for parameter, flag in self._flags:
            parameter.requires_grad_(flag)
        if self._state is not None:
            state, saved = self._state
            vars(state).update(vars(_copy_state(saved)))
        if self._config is not None:
            config, attributes = self._config
            vars(config).clear()
            vars(config).update(attributes)


def _copy_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes, with containers (submodules, parameters, hooks, lists) copied."""
    return {
        name: copy.copy(value) if isinstance(value, dict | list | set) else value
        for name, value in attributes.items()
    }


def _copy_state(state: PeftState) -> PeftState:
    return dataclasses.replace(state, methods=list(state.methods))


@contextlib.contextmanager
def rollback_on_error(model: nn.Module) -> Iterator[None]:
    """Run the block; if it raises, restore the model to its state before the block."""
    snapshot = ModelSnapshot(model)
    try:
        yield
    except BaseException:
        snapshot.restore()
        raise
