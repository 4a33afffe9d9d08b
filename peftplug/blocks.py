"""Where transformer blocks and their sub-layers live, for methods that insert or select them.

Blocks are found generically (the longest ``nn.ModuleList`` of one block class). Sub-layer
positions come from a small table keyed by ``config.model_type``; ``register_layout`` adds a
family without touching peftplug.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from peftplug.errors import PeftplugError


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """Paths inside one block of its two sub-layers (attention, feed-forward).

    ``*_input``: the module whose input is the sub-layer's input (hidden states).
    ``*_output``: the module whose output is the sub-layer's output before the residual.
    """

    attention_input: str
    attention_output: str
    feed_forward_input: str
    feed_forward_output: str
    norms: tuple[str, ...] = ()


LAYOUTS: dict[str, BlockLayout] = {
    "bert": BlockLayout(
        "attention", "attention.output.dense", "intermediate", "output.dense",
        ("attention.output.LayerNorm", "output.LayerNorm"),
    ),
    "roberta": BlockLayout(
        "attention", "attention.output.dense", "intermediate", "output.dense",
        ("attention.output.LayerNorm", "output.LayerNorm"),
    ),
    "llama": BlockLayout(
        "self_attn", "self_attn.o_proj", "mlp", "mlp",
        ("input_layernorm", "post_attention_layernorm"),
    ),
    "mistral": BlockLayout(
        "self_attn", "self_attn.o_proj", "mlp", "mlp",
        ("input_layernorm", "post_attention_layernorm"),
    ),
    "qwen2": BlockLayout(
        "self_attn", "self_attn.o_proj", "mlp", "mlp",
        ("input_layernorm", "post_attention_layernorm"),
    ),
    "gpt2": BlockLayout("attn", "attn.c_proj", "mlp", "mlp.c_proj", ("ln_1", "ln_2")),
}


def register_layout(model_type: str, layout: BlockLayout) -> None:
    """Teach peftplug where the sub-layers of another model family live."""
    LAYOUTS[model_type] = layout


def layout_of(model: nn.Module) -> BlockLayout:
    """The sub-layer layout of the model's family, or an error saying how to add one."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in LAYOUTS:
        raise PeftplugError(
            f"no block layout for model type {model_type!r} (known: {', '.join(sorted(LAYOUTS))}); "
            "add one with peftplug.blocks.register_layout(model_type, BlockLayout(...))"
        )
    return LAYOUTS[model_type]


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The transformer blocks in order, with their paths: the longest list of one block class."""
    best: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > len(best):
            kinds = {type(child) for child in module}
            if len(kinds) == 1:
                best = [(f"{path}.{i}", child) for i, child in enumerate(module)]
    if not best:
        raise PeftplugError(
            f"found no transformer blocks in {type(model).__name__} (no nn.ModuleList of one "
            "block class); name the modules to use explicitly"
        )
    return best
