"""Attach virtual tokens to any HF-style model: wrap its input embedding, hook its forward.

The input embedding (``model.get_input_embeddings()``) is wrapped in a ``PromptEmbedding``
that holds every adapter's prompt module. A forward pre-hook on the top-level model
(``with_kwargs=True``) asks that layer for the active prompt and rewrites the inputs
(``inputs.with_virtual_tokens``); a forward hook then drops the virtual positions from
``logits`` so outputs line up with the caller's tokens. No model-specific code: BERT-,
GPT-2- and Llama-style models all take ``inputs_embeds``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from peftplug import ConfigError
from peftplug_prompt.inputs import with_virtual_tokens
from peftplug_prompt.layer import PromptEmbedding

HANDLES_ATTRIBUTE = "_peftplug_prompt_hooks"


def prompt_layer(model: nn.Module) -> PromptEmbedding | None:
    """The model's wrapped input embedding, or ``None`` if no prompt is attached."""
    embedding = _input_embedding(model)
    return embedding if isinstance(embedding, PromptEmbedding) else None


def _input_embedding(model: nn.Module) -> nn.Module:
    get_embedding = getattr(model, "get_input_embeddings", None)
    embedding = get_embedding() if callable(get_embedding) else None
    if not isinstance(embedding, nn.Module):
        raise ConfigError(
            f"{type(model).__name__} has no input embedding (get_input_embeddings()): "
            "virtual-token methods need a transformers model that embeds input_ids"
        )
    return embedding


def _path_of(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, child in model.named_modules() if child is module)


def attach_prompt_layer(model: nn.Module) -> PromptEmbedding:
    """Wrap ``model``'s input embedding in an empty ``PromptEmbedding`` and hook its forward."""
    embedding = _input_embedding(model)
    layer = PromptEmbedding(embedding)
    model.set_submodule(_path_of(model, embedding), layer)
    setattr(model, HANDLES_ATTRIBUTE, _register_hooks(model, layer))
    return layer


def detach_prompt_layer(model: nn.Module, layer: PromptEmbedding) -> None:
    """Unhook ``model`` and put its own input embedding back in place of ``layer``."""
    for handle in getattr(model, HANDLES_ATTRIBUTE):
        handle.remove()
    delattr(model, HANDLES_ATTRIBUTE)
    model.set_submodule(_path_of(model, layer), layer.base_layer)


def _register_hooks(model: nn.Module, layer: PromptEmbedding) -> list[RemovableHandle]:
    parameter_names = [
        name
        for name, parameter in inspect.signature(model.forward).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    added: list[tuple[int, int]] = []  # (virtual, total) positions of the call in flight

    def before_forward(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        prompt = layer.virtual_tokens()
        added.clear()
        if prompt is None:
            return None
        inputs = {**dict(zip(parameter_names, args, strict=False)), **kwargs}
        inputs, count = with_virtual_tokens(inputs, prompt, layer.base_layer)
        if count:
            added.append((count, inputs["inputs_embeds"].shape[1]))
        return (), inputs

    def after_forward(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        logits = getattr(output, "logits", None)
        if not added or not isinstance(logits, torch.Tensor) or logits.dim() < 3:
            return None
        count, total = added.pop()
        if logits.shape[1] == total:
            output.logits = logits[:, count:]
        return output

    return [
        model.register_forward_pre_hook(before_forward, with_kwargs=True),
        model.register_forward_hook(after_forward),
    ]
