"""Which modules and parameters each fine-tuning method trains."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from peftplug import ConfigError, TargetError
from peftplug.blocks import find_blocks
from peftplug.saved_modules import resolve_modules_to_save
from peftplug.targets import TASK_HEAD_ATTRIBUTES, task_head_names
from peftplug_finetune.config import FullConfig, HeadConfig, PartialConfig

FinetuneConfig = FullConfig | PartialConfig | HeadConfig


def trained_parameters(model: nn.Module, config: FinetuneConfig) -> list[tuple[str, nn.Parameter]]:
    """The parameters the method trains in place, each once (tied weights share one)."""
    if isinstance(config, FullConfig):
        return list(model.named_parameters())
    if isinstance(config, PartialConfig):
        return parameters_of(model, partial_modules(model, config))
    return []


def saved_modules(model: nn.Module, config: FinetuneConfig) -> list[str]:
    """The head the method trains as a copy per adapter (the core's task head facility)."""
    if isinstance(config, HeadConfig):
        return head_modules(model, config)
    if isinstance(config, PartialConfig) and config.train_head:
        return task_head_names(model)
    return []


def parameters_of(model: nn.Module, paths: Iterable[str]) -> list[tuple[str, nn.Parameter]]:
    """The parameters inside the modules at ``paths``, without repeats, by their model names."""
    names = {id(p): name for name, p in model.named_parameters()}
    found: dict[int, tuple[str, nn.Parameter]] = {}
    for path in paths:
        for parameter in model.get_submodule(path).parameters():
            found.setdefault(id(parameter), (names[id(parameter)], parameter))
    return list(found.values())


def partial_modules(model: nn.Module, config: PartialConfig) -> list[str]:
    """Paths of the last ``last_k`` blocks and the named modules."""
    paths: list[str] = []
    if config.last_k:
        blocks = find_blocks(model)
        if config.last_k > len(blocks):
            container = blocks[0][0].rsplit(".", 1)[0]
            raise TargetError(
                f"partial option last_k={config.last_k} is more than the {len(blocks)} transformer "
                f"blocks of this model ({container}.0 to {container}.{len(blocks) - 1}): "
                f"set last_k to at most {len(blocks)}"
            )
        paths += [path for path, _ in blocks[-config.last_k :]]
    return paths + resolve_modules_to_save(model, config.modules, "partial option 'modules'")


def head_modules(model: nn.Module, config: HeadConfig) -> list[str]:
    """The task head, or the output layer of a model without one when the config asks for it."""
    heads = task_head_names(model)
    if heads:
        if config.train_output_layer:
            raise ConfigError(
                f"head option train_output_layer is for models without a task head, but this "
                f"model's task head is {', '.join(heads)}, which 'head' trains: drop "
                "train_output_layer"
            )
        return heads
    output = output_layer_path(model)
    if output is None:
        raise TargetError(
            f"'head' found no task head ({', '.join(TASK_HEAD_ATTRIBUTES)}) and no output layer in "
            f"{type(model).__name__}: use 'partial' with modules=[...] to name what trains"
        )
    if not config.train_output_layer:
        raise ConfigError(
            f"{type(model).__name__} has no task head, only an output layer ({output!r}); "
            "set head option train_output_layer=True to train it"
            + (" (it shares its weight with the input embeddings)" if _tied(model) else "")
        )
    return [output]


def output_layer_path(model: nn.Module) -> str | None:
    """The path of ``model.get_output_embeddings()``, or ``None`` when it has none."""
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if output is None:
        return None
    return next(path for path, module in model.named_modules() if module is output)


def _tied(model: nn.Module) -> bool:
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    return inputs is not None and outputs is not None and inputs.weight is outputs.weight
