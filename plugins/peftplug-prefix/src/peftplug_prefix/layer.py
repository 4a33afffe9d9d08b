"""Where prefixes live: per-adapter prefix modules in one store on the model.

A prefix module answers ``layer(index) -> (key [Hkv, P, D], value [Hkv, P, Dv])``. It is
called inside each attention call, so under gradient checkpointing the prefix is recomputed
with the layer from the parameters themselves and nothing computed outside a checkpointed
segment is reused.
"""

from __future__ import annotations

import torch
from peftplug_prompt.virtual_tokens import VirtualTokenStore
from torch import nn
from torch.nn import functional as F


class PrefixKeyValues(nn.Module):
    """Prefixes trained (or folded) directly: ``key`` [L, Hkv, P, D], ``value`` [L, Hkv, P, Dv]."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.key = nn.Parameter(keys)
        self.value = nn.Parameter(values)

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s prefix keys and values."""
        return self.key[index], self.value[index]

    def all_layers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's prefix keys and values, [L, Hkv, P, D] and [L, Hkv, P, Dv]."""
        return self.key, self.value


class PrefixEncoder(nn.Module):
    """The reparameterisation: ``tanh(trunk(embedding))`` [P, width], then per-layer heads.

    Each layer reads only its own rows of ``key_head``/``value_head``, so an attention call
    costs one small trunk pass and one slice, not the whole MLP. The heads are solved by least
    squares at the start so the prefixes begin at the given keys and values.
    """

    def __init__(
        self, keys: torch.Tensor, values: torch.Tensor, hidden_size: int, width: int
    ) -> None:
        super().__init__()
        layers, kv_heads, positions, key_dim = keys.shape
        self.layers, self.kv_heads = layers, kv_heads
        self.key_dim, self.value_dim = key_dim, values.shape[-1]
        # unit-normal inputs keep the trunk's outputs well spread, so the heads' least-squares
        # fit is well conditioned (token embeddings are often tiny and nearly collinear)
        self.embedding = nn.Parameter(torch.randn(positions, hidden_size).to(keys))
        self.trunk = nn.Linear(hidden_size, width).to(keys)
        self.key_head = nn.Linear(width, layers * kv_heads * key_dim).to(keys)
        self.value_head = nn.Linear(width, layers * kv_heads * self.value_dim).to(keys)
        with torch.no_grad():
            hidden = self.hidden()
            _fit(self.key_head, hidden, keys.permute(2, 0, 1, 3).reshape(positions, -1))
            _fit(self.value_head, hidden, values.permute(2, 0, 1, 3).reshape(positions, -1))

    def hidden(self) -> torch.Tensor:
        """The trunk's output, [P, width]."""
        return torch.tanh(self.trunk(self.embedding))

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden()
        return (
            self._head_slice(self.key_head, hidden, index, self.key_dim),
            self._head_slice(self.value_head, hidden, index, self.value_dim),
        )

    def _head_slice(
        self, head: nn.Linear, hidden: torch.Tensor, index: int, dim: int
    ) -> torch.Tensor:
        rows = self.kv_heads * dim
        weight = head.weight[index * rows : (index + 1) * rows]
        bias = head.bias[index * rows : (index + 1) * rows]
        return F.linear(hidden, weight, bias).view(-1, self.kv_heads, dim).transpose(0, 1)

    def all_layers(self) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden()
        shape = (hidden.shape[0], self.layers, self.kv_heads)
        keys = self.key_head(hidden).view(*shape, self.key_dim).permute(1, 2, 0, 3)
        values = self.value_head(hidden).view(*shape, self.value_dim).permute(1, 2, 0, 3)
        return keys, values

    def folded(self) -> PrefixKeyValues:
        """The prefixes this MLP produces, as plain keys and values that train as it did."""
        keys, values = (tensor.detach().clone() for tensor in self.all_layers())
        prefix = PrefixKeyValues(keys, values)
        prefix.requires_grad_(self.embedding.requires_grad)
        return prefix


def _fit(head: nn.Linear, hidden: torch.Tensor, target: torch.Tensor) -> None:
    """Set ``head`` so ``head(hidden)`` is ``target`` (exact when P <= width), in fp64."""
    bias = target.double().mean(0)
    solution = torch.linalg.lstsq(hidden.double(), target.double() - bias).solution
    head.weight.copy_(solution.T)
    head.bias.copy_(bias)


class PrefixStore(VirtualTokenStore):
    """Every adapter's prefix module, in one place on the model.

    It wraps no module (``base_layer`` is an ``nn.Identity``): the prefixes enter attention
    through the attention interface (see ``peftplug_prefix.attention``). A prefix module is a
    ``PrefixKeyValues`` or a ``PrefixEncoder``.
    """

    modules_attribute = "prefixes"
    not_mergeable_reason = (
        "a prefix adds attention positions instead of changing a weight, so it cannot be "
        "folded into the base weights; keep the adapter applied (peftplug_prefix.fold removes "
        "the reparameterisation MLP)"
    )

    def __init__(self) -> None:
        super().__init__(nn.Identity())

    def layer_prefix(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The active adapter's prefix for layer ``index``, or ``None`` when none is active."""
        prefix = self.active_module()
        return None if prefix is None else prefix.layer(index)
