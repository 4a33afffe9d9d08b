"""Where prefixes start: the keys and values the model computes for real tokens, or noise."""

from __future__ import annotations

import dataclasses

import torch
from peftplug_prompt.virtual_tokens import text_token_ids
from torch import nn

from peftplug import ConfigError
from peftplug_prefix.attention import recording
from peftplug_prefix.config import PrefixConfig


@dataclasses.dataclass
class InitialPrefix:
    """The attention modules in layer order and their starting prefixes.

    ``keys`` [L, Hkv, P, D], ``values`` [L, Hkv, P, Dv].
    """

    modules: list[nn.Module]
    keys: torch.Tensor
    values: torch.Tensor


def initial_token_ids(model: nn.Module, embedding: nn.Embedding, config: PrefixConfig) -> list[int]:
    """``num_virtual_tokens`` ids: ``init_text``'s tokens repeated or cut, else sampled ones."""
    count = config.num_virtual_tokens
    if config.init == "text":
        ids = text_token_ids(model, embedding, config)
        return (ids * -(-count // len(ids)))[:count]
    return torch.randint(0, embedding.weight.shape[0], (count,)).tolist()


def initial_prefix(
    model: nn.Module, embedding: nn.Embedding, config: PrefixConfig
) -> InitialPrefix:
    """Run the model once on the starting tokens, recording every attention layer's keys/values.

    The recording also finds the attention modules (those that call the attention interface,
    cross-attention excluded) and their key/value shapes, whatever the model family.
    """
    ids = initial_token_ids(model, embedding, config)
    device = embedding.weight.device
    input_ids = torch.tensor([ids], device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recording() as layers:
            model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"prefix tuning runs {type(model).__name__} once on {len(ids)} tokens to find its "
            f"attention layers, and that failed ({error}): use a model that takes input_ids alone "
            "(encoders and decoder-only LMs)"
        ) from error
    finally:
        model.train(was_training)
    seen: set[int] = set()
    selected = []
    for layer in layers:
        if id(layer.module) in seen or getattr(layer.module, "is_cross_attention", False):
            continue
        seen.add(id(layer.module))
        selected.append(layer)
    if not selected:
        raise ConfigError(
            f"{type(model).__name__} made no attention call through transformers' "
            "AttentionInterface, so prefix tuning has no layer to reach"
        )
    # the last positions are our tokens even when another method prepends its own
    keys = torch.stack([layer.key[:, -len(ids) :] for layer in selected]).float()
    values = torch.stack([layer.value[:, -len(ids) :] for layer in selected]).float()
    if config.init == "random":
        keys, values = torch.randn_like(keys), torch.randn_like(values)
    return InitialPrefix([layer.module for layer in selected], keys, values)
