"""FSDP2 (``fully_shard``) over 2 gloo processes on CPU: saving and loading a sharded adapter.

Both ranks train on the same batch, so FSDP averages identical gradients and the run equals
one process's: the adapter ``save_adapter`` writes from the sharded model matches a plain run's.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import peftplug
from peftplug.serialization import read_adapter
from peftplug.testing.tiny_models import VOCAB_SIZE, tiny_llama

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)

WORLD_SIZE = 2
STEPS = 3
# lora alone is saved in PEFT's layout; with partial, model.norm.weight trains in place, so the
# adapter holds a tensor that stays sharded when it is loaded into a model sharded beforehand
CASES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "lora": (["lora"], {"lora": {"r": 4}}),
    "lora-norm": (["lora", "partial"], {"lora": {"r": 4}, "partial": {"modules": ["model.norm"]}}),
}


def _batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(1, VOCAB_SIZE, (2, 8), generator=generator)


def _train(model: nn.Module) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    batch = _batch()
    for _ in range(STEPS):
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _sharded(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=_batch()).logits


def _check_loaded(model: nn.Module, saved: dict[str, torch.Tensor], rank: int) -> int:
    """Every loaded tensor holds the saved value, a DTensor its rank's chunk; counts DTensors."""
    from torch.distributed.tensor import DTensor, Shard

    live = model.state_dict()
    sharded = 0
    for name, value in saved.items():
        tensor = live[name]
        if isinstance(tensor, DTensor):
            assert tuple(tensor.placements) == (Shard(0),), name
            expected = torch.chunk(value, WORLD_SIZE, dim=0)[rank]
            assert torch.equal(tensor.to_local(), expected), name
            sharded += 1
        else:
            assert torch.equal(tensor, value), name
    return sharded


def _worker(rank: int, port: int, root: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=60)  # a rank that fails does not hang the other long
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timeout)
    try:
        for case, (methods, config) in CASES.items():
            model = _sharded(peftplug.apply(tiny_llama(), methods, config))
            _train(model)
            directory = peftplug.save_adapter(model, root / case / "sharded")  # on every rank
            dist.barrier()  # rank 0 has written it
            fresh = _sharded(tiny_llama())
            peftplug.load_adapter(fresh, directory)
            sharded = _check_loaded(fresh, read_adapter(directory)[1], rank)
            assert sharded == (case == "lora-norm"), (case, sharded)
            torch.save(_logits(fresh), root / case / f"logits-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The reference run uses the workers' thread count, so its sums round the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sharded_save_matches_one_process_and_loads_into_shards(
    tmp_path: Path, one_thread: None
) -> None:
    mp.spawn(_worker, args=(_free_port(), tmp_path), nprocs=WORLD_SIZE)
    for case, (methods, config) in CASES.items():
        reference = peftplug.apply(tiny_llama(), methods, config)
        _train(reference)
        peftplug.save_adapter(reference, tmp_path / case / "single")
        single_config, single = read_adapter(tmp_path / case / "single")
        sharded_config, sharded = read_adapter(tmp_path / case / "sharded")
        assert sharded_config["tensors"] == single_config["tensors"], case
        assert sharded_config["base_model"] == single_config["base_model"], case
        for name, value in single.items():
            torch.testing.assert_close(sharded[name], value, atol=1e-6, rtol=0, msg=name)
        assert any(value.abs().max() > 0 for name, value in single.items() if "lora_B" in name)
        expected = _logits(reference)
        for rank in range(WORLD_SIZE):
            loaded = torch.load(tmp_path / case / f"logits-{rank}.pt")
            torch.testing.assert_close(loaded, expected, atol=1e-5, rtol=0)
