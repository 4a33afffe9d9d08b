"""``peftplug.export_peft``: an adapter in HF PEFT's own layout, for PEFT, transformers and vLLM.

Each method says what its PEFT equivalent is (``peftplug_peft_equivalent``): PEFT's config fields
and its tensors under PEFT's names (``peftplug.peft_layout`` adds the task heads). The core
builds that PEFT model over a plain copy of the base, copies the tensors in (strictly: every
tensor PEFT trains must be filled, every given tensor must exist), and lets PEFT save itself, so
the files are exactly what PEFT writes.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from peftplug.apply import CONFIG_RECORD, require_state
from peftplug.atomic import atomic_write_files
from peftplug.errors import ConfigError
from peftplug.peft_layout import peft_adapter
from peftplug.portable import portable_base

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def export_peft(
    model: nn.Module, directory: str | Path, *, adapter_name: str | None = None
) -> Path:
    """Write one adapter of ``model`` (the active one by default) as HF PEFT saves it."""
    import peft

    state = require_state(model)
    name = adapter_name or state.active_adapter
    methods = [m for m in state.methods if m.adapter_name == name]
    if len(methods) != 1:
        found = ", ".join(m.spec.name for m in methods) or "nothing"
        raise ConfigError(
            f"a PEFT adapter holds one method; adapter {name!r} holds {found}: export one "
            "method per adapter, or keep the peftplug format (peftplug.save_adapter)"
        )
    (applied,) = methods
    adapter = peft_adapter(model, applied)
    if adapter is None:
        raise ConfigError(
            f"method {applied.spec.name!r} has no HF PEFT equivalent that "
            f"{applied.spec.distribution or 'its plugin'} can write: save it in peftplug's "
            "format (peftplug.save_adapter) instead"
        )
    plain = _plain_copy(model)
    peft_model = peft.get_peft_model(plain, peft.get_peft_config(adapter.config))
    live = dict(peft_model.named_parameters())
    tensors = adapter.tensors
    unknown = sorted(set(tensors) - set(live))
    if unknown:
        raise ConfigError(
            f"PEFT's model has no tensor {unknown[0]!r}: a bug in the method's export"
        )
    missing = sorted(k for k, p in live.items() if p.requires_grad and k not in tensors)
    if missing:
        raise ConfigError(
            f"the export leaves PEFT's {missing[0]!r} unfilled: a bug in the method's export"
        )
    misshapen = sorted(k for k, t in tensors.items() if t.shape != live[k].shape)
    if misshapen:
        key = misshapen[0]
        raise ConfigError(
            f"the export's {key!r} has shape {list(tensors[key].shape)} but PEFT's model, built "
            f"from the base's config, has {list(live[key].shape)}: a bug in the method's export"
        )
    with torch.no_grad():
        for key, tensor in tensors.items():
            live[key].copy_(tensor)
    directory = Path(directory)
    with tempfile.TemporaryDirectory() as scratch:
        peft_model.save_pretrained(scratch)
        atomic_write_files({directory / f: (Path(scratch) / f).read_bytes() for f in PEFT_FILES})
    return directory


def _plain_copy(model: nn.Module) -> nn.Module:
    """A new base model of the same class and config holding the base weights of ``model``.

    Built, not deep-copied: a copy would share the plugins' undo callables, which act on the
    original model. Its ``name_or_path`` is portable (``portable_base``), as PEFT records it.
    """
    config = copy.deepcopy(getattr(model, "config", None))
    if config is None or not hasattr(type(model), "config_class"):
        raise ConfigError(
            f"export_peft needs a transformers model (PreTrainedModel), got {type(model).__name__}"
        )
    if hasattr(config, CONFIG_RECORD):
        delattr(config, CONFIG_RECORD)
    config.name_or_path = portable_base(config.name_or_path)[0] if config.name_or_path else ""
    plain = type(model)(config)
    base_names = set(plain.state_dict())
    weights = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        base_name = name.replace(".base_layer", "")
        if base_name in base_names:  # a base weight (a bias LoRA trains included), not an adapter's
            weights[base_name] = tensor.detach()
    plain.load_state_dict(weights, strict=True)
    return plain.to(next(model.parameters()).dtype).eval()
