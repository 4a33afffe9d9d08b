"""Which parameters BitFit trains: the biases (all, or of chosen modules), norms, the task head."""

from __future__ import annotations

import re

from torch import nn

from peftplug import ConfigError, TargetError
from peftplug.errors import close_matches
from peftplug.targets import task_head_names
from peftplug_bitfit.config import BitFitConfig

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.RMSNorm)
# transformers defines its own norm classes (LlamaRMSNorm, T5LayerNorm ...) on nn.Module
NORM_CLASS_NAME = re.compile(r"(?:Layer|RMS)Norm$")


def is_bias(name: str) -> bool:
    """Whether a parameter name is a bias term (``bias``, or ``in_proj_bias`` and the like)."""
    leaf = name.rpartition(".")[2]
    return leaf == "bias" or leaf.endswith("_bias")


def is_norm(module: nn.Module) -> bool:
    """Whether a module is a LayerNorm or RMSNorm, torch's or a model family's own."""
    return isinstance(module, NORM_TYPES) or bool(NORM_CLASS_NAME.search(type(module).__name__))


def owner_path(name: str) -> str:
    """The path of the module that holds parameter ``name``."""
    return name.rpartition(".")[0]


def _path_matches(path: str, name: str, regex: bool) -> bool:
    if regex:
        return re.fullmatch(name, path) is not None
    return path == name or path.endswith("." + name)


def _within_target(path: str, name: str, regex: bool) -> bool:
    """Whether the module at ``path`` or a module enclosing it matches target ``name``."""
    parts = path.split(".")
    enclosing = (".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return any(_path_matches(module, name, regex) for module in enclosing)


def _within(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root + ".") for root in roots)


def norm_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights and biases of every LayerNorm/RMSNorm, or an error if the model has none."""
    parameters = {
        f"{path}.{name}": parameter
        for path, module in model.named_modules()
        if path and is_norm(module)
        for name, parameter in module.named_parameters()
    }
    if not parameters:
        raise TargetError(
            f"bitfit option train_norms=True, but {type(model).__name__} has no LayerNorm or "
            "RMSNorm layer with parameters (recognised by type nn.LayerNorm/nn.RMSNorm or a class "
            "name ending in LayerNorm/RMSNorm); set train_norms=False"
        )
    return parameters


def bias_parameters(model: nn.Module, config: BitFitConfig) -> dict[str, nn.Parameter]:
    """The bias terms ``config.target_modules`` selects, or an error naming close modules."""
    biases = {name: p for name, p in model.named_parameters() if is_bias(name)}
    heads = task_head_names(model)
    has_body_biases = any(not _within(owner_path(name), heads) for name in biases)
    targets = config.target_modules
    if not has_body_biases and not (config.train_norms and targets is None):
        raise ConfigError(_no_bias_message(model, config))
    if targets is None:
        return biases
    regex = isinstance(targets, str)
    names = [targets] if regex else targets
    selected = {
        bias: p
        for bias, p in biases.items()
        if any(_within_target(owner_path(bias), name, regex) for name in names)
    }
    unmatched = [
        name
        for name in names
        if not any(_within_target(owner_path(bias), name, regex) for bias in selected)
    ]
    if unmatched:
        raise TargetError(_nothing_selected_message(unmatched, list(biases)))
    return selected


def select_parameters(model: nn.Module, config: BitFitConfig) -> dict[str, nn.Parameter]:
    """What BitFit trains in place under ``config``, by ``model.named_parameters()`` name, in order.

    With ``train_head`` the head is left out: the core trains a copy of it per adapter.
    """
    chosen = bias_parameters(model, config)
    if config.train_norms:
        chosen.update(norm_parameters(model))
    heads = task_head_names(model) if config.train_head else []
    return {
        name: p
        for name, p in model.named_parameters()
        if name in chosen and not _within(owner_path(name), heads)
    }


def _no_bias_message(model: nn.Module, config: BitFitConfig) -> str:
    model_name = type(model).__name__
    if config.train_norms:
        return (
            f"bitfit option target_modules={config.target_modules!r} selects biases, but "
            f"{model_name} has no bias terms; drop target_modules to train only its norms"
        )
    return (
        f"{model_name} has no bias terms (its layers are built with bias=False), so BitFit has "
        "nothing to train; pass train_norms=True to train its LayerNorm/RMSNorm weights instead, "
        "or use a method that adds weights (lora)"
    )


def _nothing_selected_message(unmatched: list[str], bias_names: list[str]) -> str:
    owners = [owner_path(name) for name in bias_names]
    candidates = {".".join(path.split(".")[-depth:]) for path in owners for depth in (1, 2)}
    hints = sorted({match for name in unmatched for match in close_matches(name, candidates)})
    quoted = ", ".join(repr(name) for name in unmatched)
    message = f"bitfit option target_modules: {quoted} selects no bias of this model"
    if hints:
        message += f"; close names: {', '.join(hints)}"
    holders = sorted({path.rpartition(".")[2] for path in owners})
    return message + f"; modules with biases here: {', '.join(holders)}"
