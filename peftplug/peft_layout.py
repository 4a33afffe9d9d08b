"""HF PEFT's view of one peftplug adapter: its config fields and its tensors' names.

The one place that knows PEFT's names, used by the native adapter files (``save_adapter`` and
``load_adapter``), ``export_peft`` and ``import_peft``. Needs no ``peft``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from peftplug.errors import PeftplugError, PluginError
from peftplug.plugins import get_host
from peftplug.portable import portable_base
from peftplug.saved_modules import saved_module_layers
from peftplug.state import AppliedMethod
from peftplug.targets import task_head_names

PEFT_ADAPTER = "default"  # the adapter name in the PEFT model names an equivalent gives
PROMPT_TENSOR = f"prompt_encoder.{PEFT_ADAPTER}.embedding.weight"
PROMPT_SAVED = "prompt_embeddings"
# where PEFT's model keeps the base: under a tuner (LoRA) or directly (prompt learning)
TUNER_BASE, PROMPT_LEARNING_BASE = "base_model.model.", "base_model."
PEFT_BASE_PREFIXES = (TUNER_BASE, PROMPT_LEARNING_BASE)
PROMPT_LEARNING = frozenset(
    {"PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "CPT"}
)


@dataclasses.dataclass(frozen=True)
class PeftAdapter:
    """An adapter as HF PEFT has it: ``adapter_config.json`` fields, tensors by PEFT model name.

    ``tensors`` are the method's equivalent (live tensors, or values computed from them) plus
    the task-head copies (the core's), e.g. ``base_model.model.classifier.modules_to_save.
    default.weight``. ``computed``: the names in ``tensors`` that the method computes from its
    live tensors and sets them from with ``load`` (the equivalent's ``load``); empty, and
    ``load`` ``None``, when every tensor is live.
    """

    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    computed: frozenset[str] = frozenset()
    load: Callable[[Mapping[str, torch.Tensor]], None] | None = None

    def saved(self) -> dict[str, torch.Tensor]:
        """The tensors under their names in the file PEFT saves (``saved_name``)."""
        return {saved_name(name): tensor for name, tensor in self.tensors.items()}


def peft_adapter(model: nn.Module, applied: AppliedMethod) -> PeftAdapter | None:
    """``applied`` as an HF PEFT adapter, or ``None`` if its method has no PEFT equivalent."""
    name = applied.adapter_name
    equivalent = get_host().hook.peftplug_peft_equivalent(
        model=model, config=applied.config, adapter_name=name
    )
    if equivalent is None:
        return None
    heads = saved_module_layers(model, name, applied.spec.name)
    base = PROMPT_LEARNING_BASE if equivalent.config["peft_type"] in PROMPT_LEARNING else TUNER_BASE
    tensors = dict(equivalent.tensors)
    for path, layer in heads.items():
        for key, tensor in layer.modules_to_save[name].state_dict(keep_vars=True).items():
            tensors[f"{base}{path}.modules_to_save.{PEFT_ADAPTER}.{key}"] = tensor
    config = {
        **equivalent.config,
        "task_type": "SEQ_CLS" if task_head_names(model) else "CAUSAL_LM",
        "modules_to_save": sorted(heads) or None,
        "base_model_name_or_path": base_model_name_or_path(model),
    }
    computed = frozenset(equivalent.tensors) if equivalent.load is not None else frozenset()
    return PeftAdapter(config, tensors, computed, equivalent.load)


def base_model_name_or_path(model: nn.Module) -> str | None:
    """The base's portable name (``portable_base``), as PEFT records it, or ``None``."""
    name_or_path = getattr(getattr(model, "config", None), "name_or_path", None)
    return portable_base(name_or_path)[0] if name_or_path else None


def saved_name(name: str) -> str:
    """The name in PEFT's file of the tensor that PEFT's model calls ``name``.

    PEFT saves a prompt-learning adapter's tokens as ``prompt_embeddings``, a head copy under
    the head's own path (``modules_to_save.`` dropped), drops the adapter name before the
    parameter's own name (``_remove_adapter_name_from_state_dict_key``) and saves DoRA's
    magnitude without ``.weight`` (``LoraModel._get_adapter_state_dict``).
    """
    if name == PROMPT_TENSOR:
        return PROMPT_SAVED
    module, _, parameter = name.rpartition(".")
    module = module.removesuffix(f".{PEFT_ADAPTER}").removesuffix(".modules_to_save")
    if module.endswith(".lora_magnitude_vector") and parameter == "weight":
        return module
    return f"{module}.{parameter}"


def load_computed(
    model: nn.Module, applied: AppliedMethod, values: Mapping[str, torch.Tensor]
) -> None:
    """Set ``applied``'s live tensors from PEFT's computed ``values`` (by PEFT model name) with
    its equivalent's ``load``; the equivalent must then give the values back exactly.

    Call it under ``torch.no_grad()``. A ``load`` that raises or is not the inverse is a
    ``PluginError``.
    """
    method = applied.spec.name
    adapter = peft_adapter(model, applied)
    if adapter is None or adapter.load is None:
        raise PluginError(f"the HF PEFT equivalent of {method!r} no longer has a load")
    try:
        adapter.load(values)
    except PeftplugError:
        raise
    except Exception as error:
        raise PluginError(
            f"the HF PEFT equivalent of {method!r} failed to load PEFT's tensors "
            f"({type(error).__name__}: {error}): a plugin bug"
        ) from error
    again = getattr(peft_adapter(model, applied), "tensors", {})
    wrong = sorted(
        name
        for name, value in values.items()
        if name not in again or not torch.equal(again[name], value.to(again[name]))
    )
    if wrong:
        raise PluginError(
            f"the HF PEFT equivalent of {method!r} loaded PEFT's {wrong[0]!r} but does not give "
            "it back: its load is not the inverse of its tensors, a plugin bug"
        )
