"""``peftplug.import_peft``: an HF PEFT adapter directory as a peftplug adapter on a model.

The plugin that recognises PEFT's config (``peftplug_options_from_peft``) gives the method and
its options; once applied, the method's PEFT equivalent (``peftplug_peft_equivalent``, the hook
``export_peft`` uses) names its live tensors as PEFT's model does, and PEFT's file holds them
under those names less the adapter name. An equivalent computed from the live tensors (a table)
comes with its inverse, ``load``, which sets them from PEFT's values. The import is strict
(every tensor filled, none left over, shapes equal, a ``load`` giving the file's values back)
and on any error the model is left as it was.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from peftplug.apply import apply, require_state
from peftplug.errors import AdapterLoadError, ConfigError, PeftplugError, PluginError
from peftplug.export import PEFT_FILES
from peftplug.peft_layout import (
    PEFT_BASE_PREFIXES,
    PROMPT_LEARNING_BASE,
    TUNER_BASE,
    PeftAdapter,
    load_computed,
    peft_adapter,
    saved_name,
)
from peftplug.plugins import get_host
from peftplug.rollback import rollback_on_error
from peftplug.serialization import FORMAT, method_tensors, refuse_meta_weights, refuse_non_finite
from peftplug.state import AppliedMethod, peft_state
from peftplug.targets import walk

PEFT_CONFIG, PEFT_WEIGHTS = PEFT_FILES
PEFT_PICKLE = "adapter_model.bin"


def read_peft_adapter(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """PEFT's config and tensors as ``PeftModel.save_pretrained`` wrote them to ``directory``."""
    directory = Path(directory)
    config_path, weights_path = directory / PEFT_CONFIG, directory / PEFT_WEIGHTS
    if not config_path.is_file():
        raise AdapterLoadError(
            f"no HF PEFT adapter in {directory}: expected {PEFT_CONFIG} and {PEFT_WEIGHTS}, as "
            "PeftModel.save_pretrained writes them"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterLoadError(
            f"cannot read {config_path}: {error}; the file is corrupted"
        ) from None
    if isinstance(config, dict) and config.get("format") == FORMAT:
        raise AdapterLoadError(
            f"{directory} holds a peftplug adapter, not an HF PEFT one: load it with "
            "peftplug.load_adapter"
        )
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise AdapterLoadError(
            f"{config_path} is not an HF PEFT adapter config (it has no peft_type); point "
            "import_peft at a directory written by PeftModel.save_pretrained"
        )
    if not weights_path.is_file():
        if (directory / PEFT_PICKLE).is_file():
            raise AdapterLoadError(
                f"{directory} holds {PEFT_PICKLE}, a pickle, which peftplug does not read: save "
                f"the adapter again with PEFT's save_pretrained, which writes {PEFT_WEIGHTS}"
            )
        raise AdapterLoadError(
            f"{directory} has {PEFT_CONFIG} but no {PEFT_WEIGHTS}: the adapter is incomplete"
        )
    try:
        tensors = safetensors.torch.load(weights_path.read_bytes())
    except (OSError, safetensors.SafetensorError) as error:
        raise AdapterLoadError(
            f"cannot read {weights_path} as safetensors ({error}): corrupted or truncated"
        ) from None
    return config, tensors


# fields every HF PEFT config carries that say nothing about the method's feature set
PEFT_METADATA_FIELDS = frozenset(
    {
        "peft_type",
        "peft_version",
        "task_type",
        "base_model_name_or_path",
        "revision",
        "auto_mapping",
        "inference_mode",
    }
)


def refuse_peft_fields(
    peft_config: Mapping[str, Any], understood: Collection[str], method: str
) -> None:
    """Raise ``ConfigError`` for the first set field of ``peft_config`` not in ``understood``.

    For ``peftplug_options_from_peft``: such a field is a PEFT feature the method does not have
    (set means anything but ``None``, ``False`` or empty), so the import would not be exact.
    """
    for field, value in sorted(peft_config.items()):
        if field not in understood and value not in (None, False, "", [], {}):
            raise ConfigError(
                f"the HF PEFT adapter sets {field}={value!r}, a {peft_config['peft_type']} "
                f"feature that peftplug's {method!r} does not have: it cannot be imported"
            )


def _options_from_peft(
    model: nn.Module, peft_config: Mapping[str, Any]
) -> tuple[str, Mapping[str, Any]]:
    """The method and options importing ``peft_config`` onto ``model``.

    Plugins see ``modules_to_save`` as the model's paths PEFT wraps (a path ending with one of
    its names, PEFT's rule).
    """
    names = peft_config.get("modules_to_save") or []
    paths = [path for path, _ in walk(model) if any(path.endswith(name) for name in names)]
    host = get_host()
    found = host.hook.peftplug_options_from_peft(
        peft_config={**peft_config, "modules_to_save": paths}
    )
    if found is None:
        raise AdapterLoadError(
            f"no installed method imports HF PEFT's peft_type {peft_config['peft_type']!r}; "
            f"installed methods: {', '.join(sorted(host.methods)) or 'none'}"
        )
    if not (isinstance(found, tuple) and len(found) == 2 and isinstance(found[1], Mapping)):
        raise PluginError(
            f"peftplug_options_from_peft returned {found!r} for peft_type "
            f"{peft_config['peft_type']!r}, not (method, options): a plugin bug"
        )
    return found


def import_peft(
    model: nn.Module,
    directory: str | Path,
    *,
    adapter_name: str = "default",
    allow_non_finite: bool = False,
) -> nn.Module:
    """Apply the HF PEFT adapter saved in ``directory`` to ``model`` as adapter ``adapter_name``.

    The method whose plugin recognises PEFT's config is applied (active if it is the model's
    first adapter, as with ``apply``) and its tensors are set from PEFT's file strictly. A
    tensor holding NaN or Inf is refused unless ``allow_non_finite``. On any error the model is
    left exactly as it was. Returns ``model``.
    """
    refuse_meta_weights(model)
    peft_config, saved = read_peft_adapter(directory)
    if not allow_non_finite:
        refuse_non_finite(saved, AdapterLoadError, "import it anyway with allow_non_finite=True")
    existing = peft_state(model)
    if existing is not None and adapter_name in existing.adapter_names:
        raise AdapterLoadError(
            f"the model already has adapter {adapter_name!r}: pass another adapter_name, or "
            "peftplug.delete_adapter(model, name) first"
        )
    method, options = _options_from_peft(model, peft_config)
    try:
        with rollback_on_error(model):
            apply(model, [method], {method: options}, adapter_name=adapter_name)
            _fill(model, method, adapter_name, saved)
    except (AdapterLoadError, PluginError):
        raise
    except Exception as error:
        reason = (
            str(error) if isinstance(error, PeftplugError) else f"{type(error).__name__}: {error}"
        )
        raise AdapterLoadError(
            f"the HF PEFT adapter in {directory} does not fit this model: {reason}"
        ) from error
    return model


def _fill(
    model: nn.Module, method: str, adapter_name: str, saved: Mapping[str, torch.Tensor]
) -> None:
    """Set the new adapter from PEFT's file: copied into live tensors, or by the method's load."""
    applied, adapter, targets = _targets(model, method, adapter_name, saved)
    computed = {saved_name(name): name for name in adapter.computed}
    with torch.no_grad():
        for name, tensor in targets.items():
            if name not in computed:
                tensor.copy_(saved[name])
        if adapter.load is not None:
            load_computed(model, applied, {name: saved[key] for key, name in computed.items()})


def _targets(
    model: nn.Module, method: str, adapter_name: str, saved: Mapping[str, torch.Tensor]
) -> tuple[AppliedMethod, PeftAdapter, dict[str, torch.Tensor]]:
    """The applied method, its PEFT adapter, and each name in PEFT's file mapped to the tensor
    of the adapter it fills (live, or computed for the method's ``load``), checked strictly."""
    state = require_state(model)
    (applied,) = [m for m in state.methods if m.adapter_name == adapter_name]
    adapter = peft_adapter(model, applied)
    if adapter is None:
        raise AdapterLoadError(
            f"method {method!r} with options {applied.config.to_dict()} has no HF PEFT "
            "equivalent, so PEFT's tensors have no place in it"
        )
    targets = adapter.saved()
    # PEFT saves a head copy under the head's path below the base, under the tuner or not
    # (``base_model.model.classifier.weight``): take the place the file uses
    for name in [saved_name(n) for n in adapter.tensors if ".modules_to_save." in n]:
        path = name.removeprefix(TUNER_BASE).removeprefix(PROMPT_LEARNING_BASE)
        other = next((f"{p}{path}" for p in PEFT_BASE_PREFIXES if f"{p}{path}" in saved), name)
        targets[other] = targets.pop(name)
    computed = {saved_name(name) for name in adapter.computed}
    live_targets = {name: t for name, t in targets.items() if name not in computed}
    owned = method_tensors(model, state, adapter_name)
    _check_plugin(method, live_targets, owned, loads_the_rest=adapter.load is not None)
    _check_fits(targets, saved)
    return applied, adapter, targets


def _check_plugin(
    method: str,
    targets: Mapping[str, torch.Tensor],
    owned: Mapping[str, torch.Tensor],
    *,
    loads_the_rest: bool,
) -> None:
    """The equivalent names only the adapter's own live tensors, and all of them unless its
    ``load`` sets the rest (else a plugin bug)."""
    filled, live = {id(t) for t in targets.values()}, {id(t) for t in owned.values()}
    foreign = sorted(name for name, tensor in targets.items() if id(tensor) not in live)
    if foreign:
        raise PluginError(
            f"the HF PEFT equivalent of {method!r} gives {foreign[0]!r} as a tensor that is not "
            "one of the adapter's live tensors, so importing could not fill it: a plugin bug"
        )
    unfilled = sorted(key for key, tensor in owned.items() if id(tensor) not in filled)
    if unfilled and not loads_the_rest:
        raise PluginError(
            f"the HF PEFT equivalent of {method!r} leaves the adapter's {unfilled[0]!r} out, so "
            "importing would keep its initial values: a plugin bug"
        )


def _check_fits(targets: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor]) -> None:
    """Every tensor filled, none left over, shapes equal; else name the first that is not."""
    missing = sorted(set(targets) - set(saved))
    if missing:
        raise AdapterLoadError(
            f"the HF PEFT adapter lacks tensor {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ", which the imported method needs: the file is incomplete or made for another model"
        )
    extra = sorted(set(saved) - set(targets))
    if extra:
        raise AdapterLoadError(
            f"the HF PEFT adapter holds tensor {extra[0]!r}"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
            + ", which has no place in the imported method: importing would drop it"
        )
    for name in sorted(targets):
        if targets[name].shape != saved[name].shape:
            raise AdapterLoadError(
                f"the HF PEFT adapter's {name!r} has shape {list(saved[name].shape)} but this "
                f"model's has {list(targets[name].shape)}: it was made for another model"
            )
