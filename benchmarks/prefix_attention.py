"""C3: ``torch.ops.peftplug.prefix_attention`` against the concatenation path HF PEFT takes.

Paths, on the same causal, GQA inputs (9 query heads, 3 key/value heads, head dim 64 as in
SmolLM2):
- ``op``: the op (whichever kernel is registered for the device; the pure-PyTorch reference
  when the compiled extension is absent), prefix [Hkv, P, D] shared by the batch;
- ``concat``: what PEFT + transformers' SDPA path do: expand the prefix to every example,
  concatenate it before the keys, repeat the K/V heads (transformers' ``repeat_kv``, as SDPA
  gets a mask), build the [B, 1, S, P+S] boolean mask, call SDPA;
- ``floor``: SDPA on the keys alone (no prefix), causal, with GQA: the cost without a prefix.

Time: the paths take turns in one process, median of ``--rounds`` after ``--warmup``, for the
forward and for forward + backward (gradients of query, key, value and the prefix).
Peak memory: the process runs with ``MALLOC_MMAP_THRESHOLD_=65536`` (it re-executes itself
with it), so glibc maps every tensor above 64 KiB on its own and unmaps it when freed: resident
memory then follows live tensors. Before each measured call (after a warm-up call) the kernel's
peak-RSS counter is reset (``/proc/self/clear_refs``, 5), and the call's extra memory is
``VmHWM - VmRSS`` read around it: the peak the call reached above its inputs (Linux only).

    python benchmarks/prefix_attention.py
    python benchmarks/prefix_attention.py --rounds 20 --shapes 8x128x20,8x128x64
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from peftplug.ops import attend_with_prefix

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64
DEFAULT_SHAPES = "8x128x20,8x128x64,4x512x100"


def operands(batch: int, length: int, prefix: int) -> list[torch.Tensor]:
    """Query, key, value and the prefix's key and value, all requiring grad."""
    generator = torch.Generator().manual_seed(0)
    shapes = [
        (batch, HEADS, length, HEAD_DIM),
        (batch, KV_HEADS, length, HEAD_DIM),
        (batch, KV_HEADS, length, HEAD_DIM),
        (KV_HEADS, prefix, HEAD_DIM),
        (KV_HEADS, prefix, HEAD_DIM),
    ]
    return [torch.randn(s, generator=generator).requires_grad_() for s in shapes]


def op_path(query, key, value, prefix_key, prefix_value):
    return attend_with_prefix(query, key, value, prefix_key, prefix_value, is_causal=True)


def concat_path(query, key, value, prefix_key, prefix_value):
    batch, length, prefix = query.shape[0], query.shape[2], prefix_key.shape[1]
    groups = HEADS // KV_HEADS
    keys = torch.cat([prefix_key.expand(batch, -1, -1, -1), key], dim=2)
    values = torch.cat([prefix_value.expand(batch, -1, -1, -1), value], dim=2)
    keys = keys[:, :, None].expand(-1, -1, groups, -1, -1).reshape(batch, HEADS, -1, HEAD_DIM)
    values = values[:, :, None].expand(-1, -1, groups, -1, -1).reshape(batch, HEADS, -1, HEAD_DIM)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask = torch.cat([torch.ones(length, prefix, dtype=torch.bool), causal], dim=1)
    mask = mask.expand(batch, 1, -1, -1)
    return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask)


def floor_path(query, key, value, prefix_key, prefix_value):
    return F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)


PATHS: dict[str, Callable[..., torch.Tensor]] = {
    "op": op_path,
    "concat": concat_path,
    "floor": floor_path,
}


def run(path: Callable[..., torch.Tensor], inputs: list[torch.Tensor], backward: bool) -> None:
    """One call of ``path``; with ``backward``, also the gradients of every input."""
    if backward:
        out = path(*inputs)
        torch.autograd.grad(out, inputs, torch.ones_like(out), allow_unused=True)
    else:
        with torch.no_grad():
            path(*inputs)


def _status_kib(field: str) -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1])


def peak_extra_bytes(path: Callable[..., torch.Tensor], inputs: list[torch.Tensor], backward: bool) -> int:
    """How far resident memory rose above its starting point during one call."""
    run(path, inputs, backward)  # warm-up: one-time allocations are not the call's cost
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    run(path, inputs, backward)
    return (_status_kib("VmHWM") - before) * 1024


def timings(shape: tuple[int, int, int], rounds: int, warmup: int, backward: bool) -> dict[str, float]:
    """Median seconds per call of each path, the paths taking turns."""
    inputs = operands(*shape)
    samples: dict[str, list[float]] = {name: [] for name in PATHS}
    for index in range(warmup + rounds):
        for name, path in PATHS.items():
            started = time.perf_counter()
            run(path, inputs, backward)
            if index >= warmup:
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def check_agreement(shape: tuple[int, int, int]) -> None:
    """The op and the concatenation path compute the same attention before either is timed."""
    inputs = operands(*shape)
    with torch.no_grad():
        torch.testing.assert_close(op_path(*inputs), concat_path(*inputs), rtol=1e-4, atol=1e-5)


def main() -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
        environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        os.execve(sys.executable, [sys.executable, *sys.argv], environment)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="BATCHxSEQxPREFIX, comma-separated")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    options = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"heads {HEADS} q / {KV_HEADS} kv, head dim {HEAD_DIM}, causal, fp32")
    print("| B x S x P | mode | op ms | concat ms | floor ms | op / concat | "
          "op peak MB | concat peak MB | floor peak MB | op / concat mem |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for text in options.shapes.split(","):
        shape = tuple(int(part) for part in text.split("x"))
        check_agreement(shape)
        for backward in (False, True):
            times = timings(shape, options.rounds, options.warmup, backward)
            inputs = operands(*shape)
            memory = {name: peak_extra_bytes(path, inputs, backward) / 2**20 for name, path in PATHS.items()}
            mode = "fwd+bwd" if backward else "fwd"
            print(
                f"| {text} | {mode} | {times['op'] * 1e3:.2f} | {times['concat'] * 1e3:.2f} | "
                f"{times['floor'] * 1e3:.2f} | {times['op'] / times['concat']:.2f}x | "
                f"{memory['op']:.1f} | {memory['concat']:.1f} | {memory['floor']:.1f} | "
                f"{memory['op'] / memory['concat']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
