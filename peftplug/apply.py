"""Apply methods to a model and take them off again; merge, unmerge, switch adapters."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from peftplug.base_fingerprint import fingerprint
from peftplug.config import MethodConfig
from peftplug.contracts import MethodSpec
from peftplug.errors import ConfigError, NotMergeableError, PeftplugError, PluginError, TargetError
from peftplug.layers import AdapterLayer
from peftplug.plugins import PluginHost, get_host
from peftplug.pretrained import install_save_pretrained, remove_save_pretrained
from peftplug.rollback import rollback_on_error
from peftplug.saved_modules import save_module
from peftplug.state import (
    STATE_ATTRIBUTE,
    AppliedMethod,
    PeftState,
    adapter_layers,
    peft_state,
    require_state,
)
from peftplug.targets import TargetedConfig, find_targets

CONFIG_RECORD = "peftplug"


def resolve(
    plugins: Sequence[str] | str, config: Mapping[str, Any] | None = None
) -> list[tuple[MethodSpec, MethodConfig]]:
    """Look up each named method and parse its config, before anything touches the model."""
    names = [plugins] if isinstance(plugins, str) else plugins
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            f"plugins must be method names, got {plugins!r}: e.g. ['lora'] or ['lora', 'bitfit']"
        )
    names = list(names)
    if not names:
        raise ConfigError("no plugins given: name at least one method, e.g. ['lora']")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"plugins named more than once: {', '.join(repeated)}")
    host = get_host()
    specs = [host.method(name) for name in names]
    config = options_per_method(config)
    stray = sorted(set(config) - set(names))
    if stray:
        raise ConfigError(
            f"peft_config has options for {', '.join(map(repr, stray))}, which is not in "
            f"peft_plugins {names}: add it to peft_plugins or remove its options"
        )
    return [(spec, spec.parse_config(config.get(spec.name))) for spec in specs]


def options_per_method(config: object) -> dict[str, Any]:
    """``config`` checked to map method names to options (a dict or a config instance)."""
    example = 'e.g. {"lora": {"r": 8}}'
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"peft_config must map method names to their options, got "
            f"{type(config).__name__} {config!r}: {example}"
        )
    for method, options in config.items():
        if not isinstance(options, Mapping | MethodConfig | None):
            raise ConfigError(
                f"peft_config[{method!r}] must be the method's options (a mapping), got "
                f"{type(options).__name__} {options!r}: {example}"
            )
    return dict(config)


def apply(
    model: nn.Module,
    plugins: Sequence[str] | str,
    config: Mapping[str, Any] | None = None,
    *,
    adapter_name: str = "default",
) -> nn.Module:
    """Patch ``model`` in place with the named methods, in order, and return it.

    ``config`` maps each method name to its options (a dict or a config instance). A second
    call with another ``adapter_name`` adds an inactive adapter (see ``set_active_adapter``).
    On any error every change is rolled back and the model is as it was.
    """
    check_adapter_name(adapter_name)
    resolved = resolve(plugins, config)
    state = peft_state(model)
    if state is not None:
        taken = {m.spec.name for m in state.methods if m.adapter_name == adapter_name}
        clash = sorted(taken & {spec.name for spec, _ in resolved})
        if clash:
            raise ConfigError(
                f"adapter {adapter_name!r} already has {', '.join(clash)}: pass another "
                "adapter_name to add a second adapter, or peftplug.unload(model) first"
            )
    with rollback_on_error(model):
        if state is None:
            state = PeftState(
                original_requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
                active_adapter=adapter_name,
                base_fingerprint=fingerprint(model),
            )
            model.requires_grad_(False)
            setattr(model, STATE_ATTRIBUTE, state)
            install_save_pretrained(model)
        host = get_host()
        for spec, method_config in resolved:
            applied = AppliedMethod(spec, method_config, adapter_name)
            with _out_of_memory_explained(applied):
                _apply_method(model, host, applied)
            state.methods.append(applied)
        _activate(model, state.active_adapter)
        refresh_config_record(model)
    return model


def check_adapter_name(adapter_name: object) -> None:
    """Adapter names become module attribute names: a non-empty string without dots."""
    if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
        raise ConfigError(
            f"adapter_name must be a non-empty string without '.', got {adapter_name!r}: "
            "e.g. 'default' or 'task_b'"
        )


@contextlib.contextmanager
def _out_of_memory_explained(applied: AppliedMethod) -> Iterator[None]:
    """An allocation that fails while a method builds its tensors, as a ``ConfigError``."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
        text = str(error)
        if not isinstance(error, MemoryError | torch.OutOfMemoryError) and (
            "can't allocate memory" not in text
        ):
            raise
        size = re.search(r"allocate (\d+) bytes", text)
        needed = f" (one tensor of {int(size[1]) / 2**30:,.1f} GiB)" if size else ""
        raise ConfigError(
            f"method {applied.spec.name!r} ran out of memory building its tensors{needed}: "
            f"its options {applied.config.to_dict()} are too large for this model; lower "
            "the size options (such as r or num_virtual_tokens)"
        ) from None


def _apply_method(model: nn.Module, host: PluginHost, applied: AppliedMethod) -> None:
    config, name = applied.config, applied.adapter_name
    undo = host.hook.peftplug_prepare_model(model=model, config=config, adapter_name=name)
    applied.undo.extend(u for u in undo if u is not None)
    if isinstance(config, TargetedConfig):
        for path in find_targets(model, config):
            applied.layers.append(_wrap_target(model, host, applied, path))
    saved = host.hook.peftplug_modules_to_save(model=model, config=config, adapter_name=name)
    for path in saved or []:
        applied.layers.append(save_module(model, path, name, applied.spec.name))


def _wrap_target(
    model: nn.Module, host: PluginHost, applied: AppliedMethod, path: str
) -> AdapterLayer:
    module = model.get_submodule(path)
    config = applied.config
    wrapped = host.hook.peftplug_replace_module(
        module=module, name=path, config=config, adapter_name=applied.adapter_name
    )
    if wrapped is None:
        supported = ", ".join(t.__name__ for t in config.supported_types)
        raise TargetError(
            f"{path!r} ({type(module).__name__}) matches target_modules, but "
            f"{applied.spec.name!r} can only wrap {supported}: narrow target_modules "
            "or add it to exclude_modules"
        )
    if not isinstance(wrapped, AdapterLayer):
        raise PluginError(
            f"plugin {applied.spec.plugin!r} returned a {type(wrapped).__name__} for {path!r} "
            "from peftplug_replace_module; it must return an AdapterLayer (or None): a plugin bug"
        )
    if wrapped is not module:
        model.set_submodule(path, wrapped)
    return wrapped


def _remove_method(model: nn.Module, applied: AppliedMethod) -> None:
    """Undo one applied method: delete its adapter from its layers, unwrap layers left empty."""
    for layer in reversed(applied.layers):
        if applied.adapter_name in layer.adapter_names:
            if applied.adapter_name in layer.merged_adapters:
                layer.unmerge()
            layer.delete_adapter(applied.adapter_name)
        if not layer.adapter_names:
            _unwrap(model, layer)
    for undo in reversed(applied.undo):
        undo()


def _unwrap(model: nn.Module, layer: AdapterLayer) -> None:
    path = next((p for p, m in model.named_modules() if m is layer), None)
    if path is not None:
        layer.unmerge()
        model.set_submodule(path, layer.base_layer)


def _restore(model: nn.Module, state: PeftState) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(state.original_requires_grad.get(name, parameter.requires_grad))
    if state.original_keys_to_ignore_on_save is not None:
        model._keys_to_ignore_on_save = state.original_keys_to_ignore_on_save
    delattr(model, STATE_ATTRIBUTE)
    remove_save_pretrained(model)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, CONFIG_RECORD):
        delattr(config, CONFIG_RECORD)


def refresh_config_record(model: nn.Module) -> None:
    """Write the applied methods into ``model.config`` so Trainer checkpoints describe themselves.

    Call it after changing an applied method's config in place (as P-tuning's ``fold`` does).
    """
    state = require_state(model)
    config = getattr(model, "config", None)
    if config is not None:
        setattr(config, CONFIG_RECORD, {"format_version": 1, "methods": records(state)})


def records(state: PeftState) -> list[dict]:
    """The JSON description of every applied method."""
    return [applied.record() for applied in state.methods]


def unload(model: nn.Module, *, merge: bool = False) -> nn.Module:
    """Remove every method and return the plain model (``merge=True`` folds adapters in first)."""
    state = require_state(model)
    if merge:
        merge_adapters(model)
        for _, layer in adapter_layers(model):
            layer.merged_adapters.clear()  # keep the merged weights when unwrapping
    for applied in reversed(state.methods):
        _remove_method(model, applied)
    _restore(model, state)
    return model


def delete_adapter(model: nn.Module, adapter_name: str) -> None:
    """Remove every method of one adapter; removing the last one restores the plain model."""
    state = require_state(model)
    methods = [m for m in state.methods if m.adapter_name == adapter_name]
    if not methods:
        raise PeftplugError(
            f"no adapter named {adapter_name!r}; this model has: {', '.join(state.adapter_names)}"
        )
    for applied in reversed(methods):
        _remove_method(model, applied)
        state.methods.remove(applied)
    if not state.methods:
        _restore(model, state)
        return
    if state.active_adapter == adapter_name:
        state.active_adapter = state.adapter_names[0]
    _activate(model, state.active_adapter)
    refresh_config_record(model)


def merge_adapters(model: nn.Module) -> None:
    """Fold the active adapter into the base weights: inference with no extra cost."""
    layers = [layer for _, layer in adapter_layers(model)]
    refusing = sorted({type(layer).__name__ for layer in layers if not layer.mergeable})
    if refusing:
        reason = next(layer.not_mergeable_reason for layer in layers if not layer.mergeable)
        raise NotMergeableError(f"cannot merge {', '.join(refusing)}: {reason}")
    for layer in layers:
        layer.merge()


def unmerge_adapters(model: nn.Module) -> None:
    """Take merged adapters back out of the base weights."""
    for _, layer in adapter_layers(model):
        layer.unmerge()


def _activate(model: nn.Module, adapter_name: str) -> None:
    for _, layer in adapter_layers(model):
        layer.set_active_adapter(adapter_name)


def set_active_adapter(model: nn.Module, adapter_name: str) -> None:
    """Make ``adapter_name`` the adapter that runs and trains."""
    state = require_state(model)
    if adapter_name not in state.adapter_names:
        raise PeftplugError(
            f"no adapter named {adapter_name!r}; this model has: {', '.join(state.adapter_names)}"
        )
    _activate(model, adapter_name)
    state.active_adapter = adapter_name


@contextlib.contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model inside the block: every adapter layer is bypassed (merged ones too)."""
    require_state(model)
    layers = [layer for _, layer in adapter_layers(model)]
    merged = [layer for layer in layers if layer.merged_adapters]
    for layer in merged:
        layer.unmerge()
    for layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for layer in layers:
            layer.disabled = False
        for layer in merged:
            layer.merge()
