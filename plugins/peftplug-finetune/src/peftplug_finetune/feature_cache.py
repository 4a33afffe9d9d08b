"""A memory-bounded store of a backbone's outputs, one entry per input row."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

import torch


@dataclasses.dataclass(frozen=True)
class RowOutput:
    """One input row's share of a backbone output: its output class and each field's row."""

    output_type: type
    fields: dict[str, torch.Tensor]


@dataclasses.dataclass
class CacheStats:
    """Rows answered from the cache, rows the backbone computed, calls it could not key."""

    hits: int = 0
    misses: int = 0
    bypassed_calls: int = 0


class FeatureCache:
    """Row outputs by exact input row, holding at most ``max_bytes`` (keys included).

    When full it stores nothing more and evicts nothing: a pass over more rows than fit would
    make an LRU evict every row before its next use, while keeping the first rows serves
    that share of every later pass.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.stats = CacheStats()
        self._rows: dict[Hashable, RowOutput] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: Hashable) -> RowOutput | None:
        """The stored output of a row, or ``None``."""
        return self._rows.get(key)

    def put(self, key: Hashable, key_bytes: int, row: RowOutput) -> None:
        """Store a copy of ``row`` if it fits in the memory bound."""
        size = key_bytes + sum(t.numel() * t.element_size() for t in row.fields.values())
        if key in self._rows or self.nbytes + size > self.max_bytes:
            return
        # a copy, so the row does not keep its whole batch's storage alive
        fields = {name: tensor.clone() for name, tensor in row.fields.items()}
        self._rows[key] = RowOutput(row.output_type, fields)
        self.nbytes += size

    def clear(self) -> None:
        """Drop every stored row (the statistics are kept)."""
        self._rows.clear()
        self.nbytes = 0
