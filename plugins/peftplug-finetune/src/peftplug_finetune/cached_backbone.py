"""Run a frozen backbone through a FeatureCache: each input row's output is computed once.

The cached forward stands in for ``backbone.forward`` (an instance attribute, so parameter
names and the state dict are untouched). The backbone then always runs in eval mode without
gradients, so its output for a row is a function of that row alone and may be reused.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from transformers.utils import ModelOutput

from peftplug import AdapterLayer, PeftplugError, TargetError
from peftplug.kv_cache import kv_cache
from peftplug_finetune.feature_cache import FeatureCache, RowOutput

# Read only by loss functions (the Trainer passes it along), never by a backbone's output.
NOT_BACKBONE_INPUTS = frozenset({"num_items_in_batch"})
KEYABLE_VALUES = (type(None), bool, int, float, str)

RowKey = tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, str, tuple[int, ...], bytes], ...]]


def cacheable_backbone(model: nn.Module) -> nn.Module:
    """``model.base_model``, whose output the cache serves (the head trains a copy, so a tied
    output layer leaves it frozen)."""
    backbone = getattr(model, "base_model", None)
    if not isinstance(backbone, nn.Module) or backbone is model:
        raise TargetError(
            f"head option cache_features needs the model's backbone (model.base_model, as "
            f"transformers models have), which {type(model).__name__} lacks: turn "
            "cache_features off"
        )
    return backbone


def feature_cache(model: nn.Module) -> FeatureCache | None:
    """The feature cache of a model trained with ``head`` and cache_features, else ``None``."""
    backbone = getattr(model, "base_model", None)
    forward = getattr(backbone, "__dict__", {}).get("forward")
    return forward.cache if isinstance(forward, CachedBackbone) else None


class CachedBackbone:
    """Stands in for ``backbone.forward``: eval mode, no gradients, rows served from the cache.

    A call is cached row by row when every tensor argument has the batch as its first
    dimension and every other argument is a plain value (both become part of each row's
    key); any other call (e.g. generation with a key/value cache) runs the backbone uncached.
    """

    def __init__(self, backbone: nn.Module, cache: FeatureCache) -> None:
        self.backbone = backbone
        self.cache = cache
        self.previous_forward = backbone.__dict__.get("forward")
        self.signature = inspect.signature(backbone.forward)
        self.fingerprint: list[tuple[int, int]] = []

    def install(self) -> Callable[[], None]:
        """Put the cached forward in place; returns the callable that takes it out again."""
        self.backbone.forward = self

        def uninstall() -> None:
            if self.previous_forward is None:
                self.backbone.__dict__.pop("forward", None)
            else:
                self.backbone.forward = self.previous_forward
            self.cache.clear()

        return uninstall

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._check_backbone()
        arguments = self._named(args, kwargs)
        with self._deterministic():
            if arguments is None:
                self.cache.stats.bypassed_calls += 1
                return self._run(*args, **kwargs)
            keys = self._row_keys(arguments)
            if keys is None:
                self.cache.stats.bypassed_calls += 1
                return self._run(**arguments)
            return self._cached(arguments, keys)

    def _check_backbone(self) -> None:
        """Refuse a backbone that no longer is frozen; forget rows if its weights changed."""
        for path, module in self.backbone.named_modules():
            if isinstance(module, AdapterLayer):
                raise PeftplugError(
                    f"head option cache_features caches a frozen backbone, but {path!r} in it is "
                    f"a {type(module).__name__}, whose output can change: turn cache_features "
                    "off, or do not combine 'head' with methods that wrap backbone layers"
                )
        fingerprint = []
        for name, parameter in self.backbone.named_parameters():
            if parameter.requires_grad:
                raise PeftplugError(
                    f"head option cache_features caches a frozen backbone, but {name!r} in it "
                    "now trains: turn cache_features off, or freeze it again"
                )
            fingerprint.append((parameter.data_ptr(), parameter._version))
        if fingerprint != self.fingerprint:  # weights moved or were written in place
            self.cache.clear()
            self.fingerprint = fingerprint

    def _named(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """Every argument by name, or ``None`` for calls that cannot be named."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return None
        named: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                return None
            if kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            else:
                named[name] = value
        if "use_cache" in self.signature.parameters and kv_cache(named) is None:
            # a generation key/value cache nobody asked for is not a per-row tensor
            named["use_cache"] = named.get("use_cache") or False
        return named

    def _row_keys(self, arguments: dict[str, Any]) -> list[tuple[RowKey, int]] | None:
        """Each row's key (with its size in bytes), or ``None`` when the call cannot be keyed."""
        inputs = {n: v for n, v in arguments.items() if n not in NOT_BACKBONE_INPUTS}
        tensors = {n: v for n, v in inputs.items() if isinstance(v, torch.Tensor)}
        plain = {n: v for n, v in inputs.items() if not isinstance(v, torch.Tensor)}
        if not tensors or not all(isinstance(v, KEYABLE_VALUES) for v in plain.values()):
            return None
        first = next(iter(tensors.values()))
        batch = first.shape[0] if first.dim() else 0
        if not batch or any(t.dim() == 0 or t.shape[0] != batch for t in tensors.values()):
            return None
        call = tuple(sorted(plain.items()))
        columns = [
            (name, str(t.dtype), tuple(t.shape[1:]), _row_bytes(t))
            for name, t in sorted(tensors.items())
        ]
        keys = []
        for row in range(batch):
            parts = tuple(
                (name, dtype, shape, raw[row].tobytes()) for name, dtype, shape, raw in columns
            )
            keys.append(((call, parts), sum(len(part[3]) for part in parts)))
        return keys

    def _cached(self, arguments: dict[str, Any], keys: list[tuple[RowKey, int]]) -> Any:
        rows = [self.cache.get(key) for key, _ in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            subset = arguments if len(missing) == len(rows) else _select(arguments, missing)
            computed = self._run(**subset)
            fields = _row_fields(computed, len(missing))
            if fields is None:  # an output that does not split into rows: nothing was cached
                self.cache.stats.bypassed_calls += 1
                return computed
            for position, i in enumerate(missing):
                rows[i] = RowOutput(type(computed), {n: t[position] for n, t in fields.items()})
                self.cache.put(keys[i][0], keys[i][1], rows[i])
        self.cache.stats.hits += len(rows) - len(missing)
        self.cache.stats.misses += len(missing)
        first = rows[0]
        return first.output_type(
            **{name: torch.stack([row.fields[name] for row in rows]) for name in first.fields}
        )

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        if self.previous_forward is not None:
            return self.previous_forward(*args, **kwargs)
        return type(self.backbone).forward(self.backbone, *args, **kwargs)

    @contextlib.contextmanager
    def _deterministic(self) -> Iterator[None]:
        """Eval mode (no dropout) and no autograd graph; every module's mode is restored."""
        modes = [(module, module.training) for module in self.backbone.modules()]
        self.backbone.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for module, training in modes:
                module.training = training


def _row_bytes(tensor: torch.Tensor) -> Any:
    """The raw bytes of each row of ``tensor``, as a (batch, nbytes) uint8 array."""
    flat = tensor.detach().reshape(tensor.shape[0], -1).contiguous().cpu()
    return flat.view(torch.uint8).numpy()


def _select(arguments: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The arguments of the chosen rows only."""
    selected: dict[str, Any] = {}
    for name, value in arguments.items():
        if isinstance(value, torch.Tensor) and name not in NOT_BACKBONE_INPUTS:
            value = value[torch.tensor(rows, device=value.device)]
        selected[name] = value
    return selected


def _row_fields(output: Any, batch: int) -> dict[str, torch.Tensor] | None:
    """The output's tensor fields when each has the batch first, else ``None``."""
    if not isinstance(output, ModelOutput):
        return None
    fields: dict[str, torch.Tensor] = {}
    for name, value in output.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != batch:
            return None
        fields[name] = value
    return fields
