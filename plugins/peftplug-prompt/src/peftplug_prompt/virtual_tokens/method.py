"""A virtual-token method's life on a model, and the hook implementations every one shares.

A method subclasses ``VirtualTokenMethod``: it names its ``spec`` and optimizer group, says
where its store lives (``store``, ``attach``, ``detach``) and what one adapter holds
(``build``). The base adds and removes adapters, asks the core for the task head (each adapter
trains its own copy), and answers the method-level hooks for configs of ``spec.config_class``.
The plugin module then exposes the bound hookimpls:
``peftplug_prepare_model = METHOD.peftplug_prepare_model``, ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from peftplug import ConfigError, MethodSpec, ParamGroup, PeftEquivalent, hookimpl
from peftplug.targets import task_head_names
from peftplug_prompt.virtual_tokens.config import VirtualTokenConfig
from peftplug_prompt.virtual_tokens.store import VirtualTokenStore


class VirtualTokenMethod(ABC):
    """One virtual-token method: its store on the model, its adapters' modules, its hooks.

    ``param_group``: the name of the optimizer group that gets no weight decay (decay would
    pull the virtual tokens towards zero, away from the real tokens they start at).
    """

    spec: ClassVar[MethodSpec]
    param_group: ClassVar[str]

    @abstractmethod
    def store(self, model: nn.Module) -> VirtualTokenStore | None:
        """The model's store of this mechanism, or ``None`` when none is attached."""

    @abstractmethod
    def attach(self, model: nn.Module) -> VirtualTokenStore:
        """Give ``model`` an empty store and everything that reads it (wrappers, hooks)."""

    @abstractmethod
    def detach(self, model: nn.Module, store: VirtualTokenStore) -> None:
        """Take ``store`` and everything ``attach`` set up off ``model``."""

    @abstractmethod
    def build(
        self, model: nn.Module, config: VirtualTokenConfig, store: VirtualTokenStore
    ) -> nn.Module:
        """The virtual-token module of a new adapter with ``config``, about to join ``store``."""

    def peft_equivalent(
        self, model: nn.Module, config: VirtualTokenConfig, adapter_name: str
    ) -> PeftEquivalent | None:
        """The adapter's HF PEFT equivalent (``peftplug.export_peft``); by default none."""
        return None

    def peft_training_config(
        self, model: nn.Module, config: VirtualTokenConfig
    ) -> dict[str, Any] | None:
        """PEFT's fields training the same method on the plain ``model``; by default none."""
        return None

    def options_from_peft(self, peft_config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The options importing an HF PEFT config (``peftplug.import_peft``); by default none.

        Return ``None`` for a config that is not this method's (see ``peft_import``).
        """
        return None

    def no_decay_parameters(
        self, store: VirtualTokenStore, adapter_name: str
    ) -> list[nn.Parameter]:
        """The adapter's parameters that get no weight decay: by default all of them."""
        return list(store.adapter_parameters(adapter_name))

    def add(self, model: nn.Module, config: VirtualTokenConfig, adapter_name: str) -> None:
        """Build adapter ``adapter_name``'s module into the store (attaching it if needed)."""
        store = self.store(model)
        if store is None:
            store = self.attach(model)
        elif adapter_name in store.adapter_names:
            raise ConfigError(
                f"adapter {adapter_name!r} already holds a module in the model's "
                f"{type(store).__name__}, from another method that shares it: apply the second "
                "method under another adapter_name"
            )
        try:
            store.add_adapter(adapter_name, self.build(model, config, store))
        except BaseException:
            if not store.adapter_names:
                self.detach(model, store)
            raise

    def remove(self, model: nn.Module, adapter_name: str) -> None:
        """Take adapter ``adapter_name`` off; the last one detaches the store."""
        store = self.store(model)
        if store is None or adapter_name not in store.adapter_names:
            return
        store.delete_adapter(adapter_name)
        if not store.adapter_names:
            self.detach(model, store)

    @hookimpl
    def peftplug_register_methods(self, register: Callable[[MethodSpec], None]) -> None:
        register(self.spec)

    @hookimpl
    def peftplug_prepare_model(
        self, model: nn.Module, config: object, adapter_name: str
    ) -> Callable[[], None] | None:
        if not isinstance(config, self.spec.config_class):
            return None
        self.add(model, config, adapter_name)
        return lambda: self.remove(model, adapter_name)

    @hookimpl
    def peftplug_modules_to_save(
        self, model: nn.Module, config: object, adapter_name: str
    ) -> list[str] | None:
        if not isinstance(config, self.spec.config_class):
            return None
        return task_head_names(model) if config.train_head else []

    @hookimpl
    def peftplug_state_dict(
        self, model: nn.Module, config: object, adapter_name: str
    ) -> dict[str, torch.Tensor] | None:
        if not isinstance(config, self.spec.config_class):
            return None
        return self.store(model).adapter_tensors(model, adapter_name)

    @hookimpl
    def peftplug_peft_training_config(
        self, model: nn.Module, config: object
    ) -> dict[str, Any] | None:
        if not isinstance(config, self.spec.config_class):
            return None
        return self.peft_training_config(model, config)

    @hookimpl
    def peftplug_peft_equivalent(
        self, model: nn.Module, config: object, adapter_name: str
    ) -> PeftEquivalent | None:
        if not isinstance(config, self.spec.config_class):
            return None
        return self.peft_equivalent(model, config, adapter_name)

    @hookimpl
    def peftplug_options_from_peft(
        self, peft_config: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        options = self.options_from_peft(peft_config)
        return None if options is None else (self.spec.name, options)

    @hookimpl
    def peftplug_param_groups(
        self, model: nn.Module, config: object, adapter_name: str
    ) -> list[ParamGroup] | None:
        if not isinstance(config, self.spec.config_class):
            return None
        parameters = self.no_decay_parameters(self.store(model), adapter_name)
        return [ParamGroup(parameters, self.param_group, weight_decay=0.0)]
