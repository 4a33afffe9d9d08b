"""Tensors that FSDP2 (``torch.distributed.fsdp.fully_shard``) shards: ``DTensor``s.

The adapter files hold whole tensors. Saving gathers each sharded tensor whole, a collective
(so every rank calls ``save_adapter``), and global rank 0 alone writes; loading copies each
rank's part of a saved tensor into its local shard, without communication. Plain tensors pass
through unchanged. ``torch.distributed`` is imported only when a tensor is asked about, and
not at all where torch is built without it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn


@functools.cache
def _dtensor_class() -> type[torch.Tensor] | None:
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (each rank holds a part of it)."""
    dtensor = _dtensor_class()
    return dtensor is not None and isinstance(tensor, dtensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of ``tensor``; a ``DTensor`` is gathered from every rank (a collective)."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def copy_into(live: torch.Tensor, value: torch.Tensor) -> None:
    """Copy the whole ``value`` into ``live``; into a ``DTensor``, only this rank's part."""
    if not is_sharded(live):
        live.copy_(value)
        return
    from torch.distributed.tensor import distribute_tensor

    # src_data_rank=None: every rank holds ``value`` and keeps its own part; nothing is sent
    part = distribute_tensor(value, live.device_mesh, live.placements, src_data_rank=None)
    live.to_local().copy_(part.to_local())


def unsharded_class(module: nn.Module) -> type[nn.Module]:
    """The class of ``module``, not the ``FSDP<class>`` subclass ``fully_shard`` gives it."""
    cls = type(module)
    if not torch.distributed.is_available():
        return cls
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in cls.__mro__ if not issubclass(c, FSDPModule))


def is_writer(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether this process writes the file of ``tensors``: any caller if none is sharded;
    else global rank 0 alone (every rank holds the same gathered values)."""
    return not any(is_sharded(t) for t in tensors) or torch.distributed.get_rank() == 0
