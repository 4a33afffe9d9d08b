"""Putting adapters into every transformer block, and taking them out again.

The modules to wrap come from ``peftplug.blocks`` (the block list and the model family's
``BlockLayout``), not from user-given names, so this runs in ``peftplug_prepare_model``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from peftplug import PeftplugError
from peftplug.blocks import BlockLayout, find_blocks, layout_of
from peftplug.targets import task_head_names
from peftplug_adapter.config import AdapterConfig
from peftplug_adapter.layer import AdapterSettings, BottleneckAdapterLayer


def hidden_size_of(model: nn.Module) -> int:
    """The model's hidden size ``d``, from its config."""
    hidden_size = getattr(getattr(model, "config", None), "hidden_size", None)
    if not isinstance(hidden_size, int):
        raise PeftplugError(
            f"{type(model).__name__} has no config.hidden_size, so the adapter width is unknown: "
            "bottleneck adapters need a transformers model"
        )
    return hidden_size


def sublayer_paths(layout: BlockLayout, sublayer: str) -> tuple[str, str]:
    """(input module, output module) of one sub-layer inside a block."""
    if sublayer == "attention":
        return layout.attention_input, layout.attention_output
    return layout.feed_forward_input, layout.feed_forward_output


def insert_adapters(
    model: nn.Module, config: AdapterConfig, adapter_name: str
) -> Callable[[], None]:
    """Add adapter ``adapter_name`` to each chosen sub-layer of every block; return the undo.

    All or nothing: on any error the adapters added so far are removed again.
    """
    layout = layout_of(model)
    hidden_size = hidden_size_of(model)
    bottleneck = config.bottleneck_for(hidden_size)
    assert config.non_linearity is not None and config.scaling is not None  # __post_init__
    settings = AdapterSettings(config.non_linearity, config.scaling, config.placement == "parallel")
    inserted: list[tuple[nn.Module, str]] = []

    def undo() -> None:
        for block, path in reversed(inserted):
            layer = block.get_submodule(path)
            layer.delete_adapter(adapter_name)
            if not layer.adapter_names:
                block.set_submodule(path, layer.base_layer)

    try:
        for _, block in find_blocks(model):
            for sublayer in config.sublayers or ():
                input_path, output_path = sublayer_paths(layout, sublayer)
                sublayer_input = block.get_submodule(input_path) if settings.parallel else None
                layer = _adapter_layer_at(block, output_path, hidden_size)
                inserted.append((block, output_path))
                layer.add_adapter(adapter_name, bottleneck, settings, sublayer_input)
    except BaseException:
        undo()
        raise
    return undo


def _adapter_layer_at(block: nn.Module, path: str, hidden_size: int) -> BottleneckAdapterLayer:
    """The adapter layer at ``path``, wrapping the module there on first use."""
    module = block.get_submodule(path)
    if isinstance(module, BottleneckAdapterLayer):
        return module
    layer = BottleneckAdapterLayer(module, hidden_size)
    block.set_submodule(path, layer)
    return layer


def saved_module_names(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Modules each adapter trains a copy of: the task head and, if asked, the block norms."""
    names = task_head_names(model) if config.train_head else []
    if config.train_layer_norms:
        norms = layout_of(model).norms
        names += [f"{path}.{norm}" for path, _ in find_blocks(model) for norm in norms]
    return names
