"""``peftplug export --format peft``: a LoRA adapter in the layout HF PEFT (and vLLM) reads.

The adapter's tensors are copied into a PEFT model built over the base with the same settings,
which then saves itself, so the files are exactly what PEFT writes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from peftplug.atomic import atomic_write_files
from peftplug.compare.export_inputs import base_model_for, refuse_non_empty
from peftplug.compare.peft_rows import lora_config
from peftplug.errors import ConfigError
from peftplug.serialization import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_adapter

PEFT_PREFIX = "base_model.model."


def _peft_name(key: str, adapter_name: str, names: set[str]) -> str:
    """PEFT's parameter name for one of our tensor names."""
    for part in ("lora_A", "lora_B", "modules_to_save"):
        marker = f".{part}.{adapter_name}."
        if marker in key:
            return PEFT_PREFIX + key.replace(marker, f".{part}.default.")
    if PEFT_PREFIX + key in names:
        return PEFT_PREFIX + key
    raise ConfigError(f"tensor {key!r} has no place in PEFT's LoRA model: cannot export it")


def export_peft(
    adapter: str | Path, out: str | Path, model: str | None = None, task: str | None = None
) -> Path:
    """Write a one-method LoRA adapter as PEFT's ``adapter_config.json`` + safetensors."""
    import peft

    description, tensors = read_adapter(adapter)
    methods = description["methods"]
    if len(methods) != 1 or methods[0]["method"] != "lora":
        names = ", ".join(m["method"] for m in methods)
        raise ConfigError(
            f"--format peft exports a single LoRA adapter; {adapter} holds {names}: "
            "use --format peftplug or --format merged"
        )
    out = refuse_non_empty(Path(out))
    base, _ = base_model_for(adapter, model, task)
    task_type = "SEQ_CLS" if task == "classification" or _has_head(base) else "CAUSAL_LM"
    peft_model = peft.get_peft_model(base, lora_config(methods[0]["config"], base, task_type))
    parameters = dict(peft_model.named_parameters())
    trainable = {name for name, p in parameters.items() if p.requires_grad}
    filled: set[str] = set()
    with torch.no_grad():
        for key, tensor in tensors.items():
            name = _peft_name(key, methods[0]["adapter_name"], set(parameters))
            parameters[name].copy_(tensor)
            filled.add(name)
    if trainable - filled:
        missing = ", ".join(sorted(trainable - filled)[:3])
        raise ConfigError(f"PEFT's LoRA model has tensors the adapter lacks: {missing}")
    with tempfile.TemporaryDirectory() as scratch:
        peft_model.save_pretrained(scratch)
        names = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
        atomic_write_files({out / name: (Path(scratch) / name).read_bytes() for name in names})
    return out


def _has_head(model: torch.nn.Module) -> bool:
    from peftplug.targets import task_head_names

    return bool(task_head_names(model))
