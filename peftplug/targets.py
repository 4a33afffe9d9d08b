"""Which modules a method wraps: names, regular expressions, "all-linear", default tables."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import ClassVar

from torch import nn
from transformers.pytorch_utils import Conv1D

from peftplug.config import MethodConfig
from peftplug.errors import ConfigError, TargetError, close_matches
from peftplug.layers import AdapterLayer
from peftplug.quant.linear import NF4Linear

ALL_LINEAR = "all-linear"
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D, NF4Linear)
TASK_HEAD_ATTRIBUTES = ("classifier", "score", "qa_outputs")

# Attention projections targeted when a config gives no target_modules, by model_type.
DEFAULT_ATTENTION_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "opt": ["q_proj", "v_proj"],
    "t5": ["q", "v"],
}


@dataclasses.dataclass
class TargetedConfig(MethodConfig):
    """A config whose method wraps chosen modules.

    ``target_modules``: a list of module names (a name matches itself and any module whose
    dotted path ends with it), a regular expression string matched against the whole path,
    or ``"all-linear"`` (every linear layer except the output layer and the task head).
    ``None`` uses the model type's attention projections. ``exclude_modules`` takes the same
    forms and wins over ``target_modules``.
    """

    supported_types: ClassVar[tuple[type[nn.Module], ...]] = LINEAR_TYPES

    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None


def walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Named submodules, not descending into adapter layers (their insides are not targets)."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        yield path, child
        if not isinstance(child, AdapterLayer):
            yield from walk(child, path)


def task_head_names(model: nn.Module) -> list[str]:
    """The freshly initialised task head(s) of a classification or QA model."""
    return [
        attribute
        for attribute in TASK_HEAD_ATTRIBUTES
        if isinstance(getattr(model, attribute, None), nn.Module)
    ]


def output_layer_names(model: nn.Module) -> set[str]:
    """The output embedding (LM head) and task heads: never targets of "all-linear"."""
    names = set(task_head_names(model))
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if output is not None:
        names.update(name for name, module in model.named_modules() if module is output)
    return names


def _matches(path: str, pattern: list[str] | str) -> bool:
    if isinstance(pattern, str):
        return re.fullmatch(pattern, path) is not None
    return any(path == name or path.endswith("." + name) for name in pattern)


def _base_type(module: nn.Module) -> type[nn.Module]:
    return type(module.base_layer) if isinstance(module, AdapterLayer) else type(module)


def _inside(path: str, heads: set[str]) -> bool:
    return any(path == head or path.startswith(head + ".") for head in heads)


def find_targets(model: nn.Module, config: TargetedConfig) -> list[str]:
    """The module paths the config selects, or a TargetError with close names."""
    targets = config.target_modules
    if targets is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in DEFAULT_ATTENTION_TARGETS:
            raise ConfigError(
                f"{config.method!r} has no default target_modules for model type {model_type!r}; "
                "set target_modules (module names, a regex, or 'all-linear')"
            )
        targets = DEFAULT_ATTENTION_TARGETS[model_type]
    modules = list(walk(model))
    if targets == ALL_LINEAR:
        outputs = output_layer_names(model)
        selected = [
            path
            for path, module in modules
            if issubclass(_base_type(module), LINEAR_TYPES) and not _inside(path, outputs)
        ]
    else:
        if isinstance(targets, str):
            try:
                re.compile(targets)
            except re.error as error:
                raise ConfigError(f"target_modules {targets!r} is not a valid regex: {error}")
        selected = [path for path, _ in modules if _matches(path, targets)]
    if config.exclude_modules:
        selected = [path for path in selected if not _matches(path, config.exclude_modules)]
    if not selected:
        raise TargetError(_nothing_matched(config.method, targets, modules))
    return selected


def _nothing_matched(method: str, targets: list[str] | str, modules: list) -> str:
    leaf_names = {path.rsplit(".", 1)[-1] for path, _ in modules}
    wanted = [targets] if isinstance(targets, str) else targets
    hints = sorted({m for name in wanted for m in close_matches(name, leaf_names)})
    linear = sorted(
        {
            path.rsplit(".", 1)[-1]
            for path, module in modules
            if issubclass(_base_type(module), LINEAR_TYPES)
        }
    )
    message = f"target_modules {targets!r} of {method!r} match no module of this model"
    if hints:
        message += f"; close names: {', '.join(hints)}"
    return message + f"; linear layers here: {', '.join(linear) or 'none'}"
