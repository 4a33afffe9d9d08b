"""``save_pretrained`` on a patched model writes its adapter files, and no ``config.json``.

The Trainer saves checkpoints and ``save_model`` through ``model.save_pretrained``. For a
patched model that writes the adapter-only ``model.safetensors`` that resuming reads, and the
adapter files (``save_adapter``), but not ``config.json``: transformers' ``from_pretrained``
reads a directory with a ``config.json`` as a complete model and would fill the base with
random values. Without one it loads the base named in ``adapter_config.json`` plus the adapter
through its PEFT integration, or fails.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from torch import nn

from peftplug.adapter_save import method_tensors, save_adapter
from peftplug.state import PeftState, require_state

TRAINER_CONFIG = "config.json"
ATTRIBUTE = "save_pretrained"


def install_save_pretrained(model: nn.Module) -> None:
    """Give a transformers model the instance-level ``save_pretrained`` below."""
    if callable(getattr(type(model), ATTRIBUTE, None)):
        vars(model)[ATTRIBUTE] = types.MethodType(save_pretrained, model)


def remove_save_pretrained(model: nn.Module) -> None:
    """Give the model its class's ``save_pretrained`` back."""
    vars(model).pop(ATTRIBUTE, None)


def save_pretrained(
    model: nn.Module, save_directory: str | Path, is_main_process: bool = True, **kwargs: Any
) -> None:
    """The class's ``save_pretrained`` of the adapter's tensors only, then the adapter files.

    A tensor holding NaN or Inf is saved (a checkpoint of a diverged run); ``load_adapter``
    refuses it.
    """
    save_only_adapter_tensors(model, require_state(model))
    type(model).save_pretrained(model, save_directory, is_main_process=is_main_process, **kwargs)
    if is_main_process:
        directory = Path(save_directory)
        (directory / TRAINER_CONFIG).unlink(missing_ok=True)
        save_adapter(model, directory, allow_non_finite=True)


def save_only_adapter_tensors(model: nn.Module, state: PeftState) -> None:
    """Make ``save_pretrained`` hold only what trains or belongs to a method."""
    keep = {name for name, p in model.named_parameters() if p.requires_grad}
    keep.update(method_tensors(model, state))
    if state.original_keys_to_ignore_on_save is None:
        state.original_keys_to_ignore_on_save = getattr(model, "_keys_to_ignore_on_save", None)
    model._keys_to_ignore_on_save = sorted(set(model.state_dict()) - keep)
