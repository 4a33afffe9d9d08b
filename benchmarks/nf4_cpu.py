"""C1 and C2 (BENCHMARKS.md): the NF4 CPU kernels against their anchors, side by side in one process.

C1: NF4 linear forward at M = 1..16 fp32 rows, weights 1536x576 (SmolLM2's MLP), 2048x2048 and
11008x4096: the compiled kernel against the reference (dequantize, then ``F.linear``), against
bitsandbytes' CPU path (``dequantize_4bit``, then ``F.linear``) and against ``F.linear`` on the
fp32 weight. Goal: faster than all three at M <= 16.
C2: NF4 + LoRA forward and backward at M = 512: the kernel against the reference composition and
float LoRA over a float weight. Goal: within 1.3x of float LoRA.

Variants take turns inside each round, so machine noise hits all alike; each figure is the
median over rounds after a warm-up. Ratios > 1 mean the kernel is faster.

    OMP_NUM_THREADS=1 python benchmarks/nf4_cpu.py [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from peftplug import ops
from peftplug.ops.nf4 import dequantize_reference, lora_linear_reference
from peftplug.quant import quantize_nf4, to_bitsandbytes

C1_SHAPES = [(1536, 576), (2048, 2048), (11008, 4096)]  # (out, in)
C1_ROWS = [1, 2, 4, 8, 16]
C2_SHAPES = [(1536, 576), (2048, 2048)]
C2_RANKS = [8, 64]


def median_times(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each variant, the variants interleaved round by round."""
    for run in variants.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def c1_variants(weight: torch.Tensor, x: torch.Tensor, bnb: object | None) -> dict[str, Callable[[], object]]:
    """The kernel and its three anchors on one weight and one batch of rows."""
    out_features, in_features = weight.shape
    nf4 = quantize_nf4(weight)
    empty_a, empty_b = torch.empty(0, in_features), torch.empty(out_features, 0)
    variants: dict[str, Callable[[], object]] = {
        "kernel": lambda: torch.ops.peftplug.nf4_lora_linear(
            x, nf4.packed, nf4.absmax, out_features, 64, None, x, empty_a, empty_b, 0.0
        ),
        "reference": lambda: F.linear(
            x, dequantize_reference(nf4.packed, nf4.absmax, weight.shape, 64, torch.float32)
        ),
        "fp32": lambda: F.linear(x, weight),
    }
    if bnb is not None:
        packed, state = to_bitsandbytes(nf4)
        variants["bitsandbytes"] = lambda: F.linear(x, bnb.dequantize_4bit(packed, state))
    return variants


def c1(rounds: int) -> None:
    try:
        import bitsandbytes.functional as bnb
    except ImportError:
        bnb = None
    print("\nC1: NF4 linear forward, fp32 activations (speed-up of the kernel over each anchor)")
    print("| weight (out x in) | M | kernel ms | vs reference | vs bitsandbytes | vs F.linear fp32 |")
    print("|---|---|---|---|---|---|")
    for out_features, in_features in C1_SHAPES:
        weight = torch.randn(out_features, in_features)
        for rows in C1_ROWS:
            times = median_times(c1_variants(weight, torch.randn(rows, in_features), bnb), rounds)
            kernel = times["kernel"]
            bnb_ratio = f"{times['bitsandbytes'] / kernel:.2f}x" if "bitsandbytes" in times else "n/a"
            print(
                f"| {out_features}x{in_features} | {rows} | {kernel * 1e3:.3f} | "
                f"{times['reference'] / kernel:.2f}x | {bnb_ratio} | {times['fp32'] / kernel:.2f}x |"
            )


def _forward_backward(forward: Callable[[], torch.Tensor], grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        forward().backward(grad)

    return run


def c2_variants(weight: torch.Tensor, rank: int, rows: int) -> dict[str, Callable[[], None]]:
    """Forward + backward (input and LoRA gradients) of the kernel, the reference and float LoRA."""
    out_features, in_features = weight.shape
    nf4 = quantize_nf4(weight)
    x = torch.randn(rows, in_features, requires_grad=True)
    a = (torch.randn(rank, in_features) * 0.01).requires_grad_()
    b = (torch.randn(out_features, rank) * 0.01).requires_grad_()
    grad = torch.randn(rows, out_features)
    args = (nf4.packed, nf4.absmax, out_features, 64, None)
    return {
        "kernel": _forward_backward(
            lambda: torch.ops.peftplug.nf4_lora_linear(x, *args, x, a, b, 2.0), grad
        ),
        "reference": _forward_backward(lambda: lora_linear_reference(x, *args, x, a, b, 2.0), grad),
        "float LoRA": _forward_backward(
            lambda: F.linear(x, weight) + 2.0 * F.linear(F.linear(x, a), b), grad
        ),
    }


def c2(rounds: int) -> None:
    print("\nC2: NF4 + LoRA forward + backward, M = 512, fp32 (time relative to float LoRA)")
    print("| weight (out x in) | r | float LoRA ms | kernel / float LoRA | reference / float LoRA |")
    print("|---|---|---|---|---|")
    for out_features, in_features in C2_SHAPES:
        weight = torch.randn(out_features, in_features)
        for rank in C2_RANKS:
            times = median_times(c2_variants(weight, rank, rows=512), rounds)
            base = times["float LoRA"]
            print(
                f"| {out_features}x{in_features} | {rank} | {base * 1e3:.2f} | "
                f"{times['kernel'] / base:.2f}x | {times['reference'] / base:.2f}x |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    status = ops.extension_status()
    if not status["loaded"]:
        raise SystemExit(f"the compiled extension is not loaded: {status['reason']}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), extension {status}")
    with torch.no_grad():
        c1(arguments.rounds)
    c2(arguments.rounds)


if __name__ == "__main__":
    main()
