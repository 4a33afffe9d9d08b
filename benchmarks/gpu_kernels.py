"""G1-G4 of shared/design/BENCHMARKS.md on a GPU: the CUDA kernels against their anchors.

    python benchmarks/gpu_kernels.py [--only G1,G2,G3,G4] [--repeats 50]

Every row is measured in this process after warm-up (median of CUDA-event timings), with the
anchors beside it: bitsandbytes 0.50.2 (when installed), HF PEFT + bitsandbytes (G3), bf16
cuBLAS, and SDPA with and without the prefix. G1 also prints the share of the bandwidth
roofline (bytes that must move / the device's copy bandwidth, measured here).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch.nn import functional as F

import peftplug.ops  # noqa: F401  (registers the ops, loads the extension)
from peftplug.ops import extension_status
from peftplug.quant import quantize_nf4

DECODE_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096)]  # (N, K)
DTYPE = torch.bfloat16


def milliseconds(function: Callable[[], object], repeats: int) -> float:
    """Median CUDA time of ``function`` after three warm-up calls."""
    for _ in range(3):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(repeats: int) -> float:
    """Bytes per second of a device-to-device copy of 1 GiB (read + write)."""
    source = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    return 2 * source.numel() / (milliseconds(lambda: target.copy_(source), repeats) / 1e3)


def bitsandbytes_functional():  # noqa: ANN201
    try:
        import bitsandbytes.functional as functional
    except ImportError:
        return None
    return functional


def nf4_operands(out_features: int, in_features: int) -> tuple:
    weight = torch.randn(out_features, in_features, device="cuda", dtype=DTYPE) * 0.02
    quantized = quantize_nf4(weight, double_quant=True)
    return weight, quantized.packed, quantized.block_absmax(), quantized.nbytes


def g1(repeats: int) -> None:
    bandwidth = copy_bandwidth(repeats)
    functional = bitsandbytes_functional()
    print(f"\nG1 NF4 linear forward, decode (copy bandwidth {bandwidth / 1e12:.2f} TB/s)")
    print("| N x K | M | ours ms | % roofline | vs bnb | vs deq+linear | vs bf16 linear |")
    print("|---|---|---|---|---|---|---|")
    for out_features, in_features in DECODE_SHAPES:
        weight, packed, absmax, weight_bytes = nf4_operands(out_features, in_features)
        state = None
        if functional is not None:
            bnb_packed, state = functional.quantize_4bit(weight, quant_type="nf4")
        empty_a = torch.empty(0, in_features, device="cuda")
        empty_b = torch.empty(out_features, 0, device="cuda")
        for rows in (1, 2, 4, 8, 16, 32, 64):
            x = torch.randn(rows, in_features, device="cuda", dtype=DTYPE)
            ours = milliseconds(
                lambda: torch.ops.peftplug.nf4_lora_linear(
                    x, packed, absmax, out_features, 64, None, x, empty_a, empty_b, 0.0
                ),
                repeats,
            )
            needed = weight_bytes + 2 * rows * (in_features + out_features)
            roofline = needed / bandwidth * 1e3 / ours
            dequantized = milliseconds(
                lambda: F.linear(
                    x,
                    torch.ops.peftplug.nf4_dequantize(
                        packed, absmax, [out_features, in_features], 64, DTYPE
                    ),
                ),
                repeats,
            )
            dense = milliseconds(lambda: F.linear(x, weight), repeats)
            if state is not None:
                theirs = milliseconds(
                    lambda: functional.gemv_4bit(x, bnb_packed.t(), state=state)
                    if rows == 1
                    else F.linear(x, functional.dequantize_4bit(bnb_packed, state)),
                    repeats,
                )
                versus_bnb = f"{theirs / ours:.2f}x"
            else:
                versus_bnb = "bnb missing"
            print(
                f"| {out_features}x{in_features} | {rows} | {ours:.4f} | {roofline:.0%} | "
                f"{versus_bnb} | {dequantized / ours:.2f}x | {dense / ours:.2f}x |",
                flush=True,
            )


def g2(repeats: int) -> None:
    print("\nG2 NF4 linear forward and input gradient, prefill/training (ratio to bf16 cuBLAS)")
    print("| N x K | M | fwd ours/cuBLAS | fwd deq+cuBLAS/cuBLAS | dgrad ours/cuBLAS |")
    print("|---|---|---|---|---|")
    for out_features, in_features in DECODE_SHAPES[:2]:
        weight, packed, absmax, _ = nf4_operands(out_features, in_features)
        empty_a = torch.empty(0, in_features, device="cuda")
        empty_b = torch.empty(out_features, 0, device="cuda")
        for rows in (256, 1024, 4096, 16384):
            x = torch.randn(rows, in_features, device="cuda", dtype=DTYPE)
            grad = torch.randn(rows, out_features, device="cuda", dtype=DTYPE)
            dense = milliseconds(lambda: F.linear(x, weight), repeats)
            ours = milliseconds(
                lambda: torch.ops.peftplug.nf4_lora_linear(
                    x, packed, absmax, out_features, 64, None, x, empty_a, empty_b, 0.0
                ),
                repeats,
            )
            dequantized = milliseconds(
                lambda: F.linear(
                    x,
                    torch.ops.peftplug.nf4_dequantize(
                        packed, absmax, [out_features, in_features], 64, DTYPE
                    ),
                ),
                repeats,
            )
            dense_grad = milliseconds(lambda: grad @ weight, repeats)
            ours_grad = milliseconds(
                lambda: torch.ops.peftplug.nf4_lora_linear_backward(
                    grad, packed, absmax, out_features, 64, x, empty_a, empty_b, 0.0, True
                ),
                repeats,
            )
            print(
                f"| {out_features}x{in_features} | {rows} | {ours / dense:.3f} | "
                f"{dequantized / dense:.3f} | {ours_grad / dense_grad:.3f} |",
                flush=True,
            )


def g3(repeats: int) -> None:
    functional = bitsandbytes_functional()
    print("\nG3 QLoRA linear forward + backward (ratios: anchor time / ours)")
    print("| N x K | r | M | vs PEFT+bnb | vs bf16 LoRA | ours / two bf16 GEMMs |")
    print("|---|---|---|---|---|---|")
    out_features, in_features = DECODE_SHAPES[0]
    weight, packed, absmax, _ = nf4_operands(out_features, in_features)
    for rank in (8, 16, 64):
        lora_a = (torch.randn(rank, in_features, device="cuda") * 0.01).requires_grad_()
        lora_b = torch.zeros(out_features, rank, device="cuda", requires_grad=True)
        for rows in (512, 2048, 8192, 16384):
            x = torch.randn(rows, in_features, device="cuda", dtype=DTYPE, requires_grad=True)

            def ours() -> None:
                y = torch.ops.peftplug.nf4_lora_linear(
                    x, packed, absmax, out_features, 64, None, x, lora_a, lora_b, 2.0
                )
                y.backward(torch.ones_like(y))

            def float_lora() -> None:
                y = F.linear(x, weight) + 2.0 * F.linear(F.linear(x, lora_a.to(DTYPE)), lora_b.to(DTYPE))
                y.backward(torch.ones_like(y))

            def floor() -> None:  # the forward and input-gradient GEMMs of the frozen weight
                y = F.linear(x.detach(), weight)
                torch.ones_like(y) @ weight

            mine, lora, gemms = (milliseconds(f, repeats) for f in (ours, float_lora, floor))
            versus_peft = "bnb missing"
            if functional is not None:
                import bitsandbytes as bnb

                layer = bnb.nn.Linear4bit(in_features, out_features, bias=False,
                                          compute_dtype=DTYPE, quant_type="nf4").cuda()

                def peft_like() -> None:
                    y = layer(x) + 2.0 * F.linear(F.linear(x, lora_a.to(DTYPE)), lora_b.to(DTYPE))
                    y.backward(torch.ones_like(y))

                versus_peft = f"{milliseconds(peft_like, repeats) / mine:.2f}x"
            print(
                f"| {out_features}x{in_features} | {rank} | {rows} | {versus_peft} | "
                f"{lora / mine:.2f}x | {mine / gemms:.2f} |",
                flush=True,
            )


def g4(repeats: int) -> None:
    print("\nG4 prefix attention, causal, bf16, H=32, d=128 (ours / no-prefix SDPA; concat / ours)")
    print("| kv heads | B | S | P | fwd ours/floor | bound 1+2P/S | fwd concat/ours | "
          "fwd+bwd ours/floor | fwd+bwd concat/ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    heads, dim = 32, 128
    for kv_heads in (32, 8):
        for batch, length in ((8, 512), (4, 2048), (1, 8192)):
            for prefix in (10, 50, 200):
                options = {"device": "cuda", "dtype": DTYPE, "requires_grad": True}
                q = torch.randn(batch, heads, length, dim, **options)
                k = torch.randn(batch, kv_heads, length, dim, **options)
                v = torch.randn(batch, kv_heads, length, dim, **options)
                pk = torch.randn(kv_heads, prefix, dim, **options)
                pv = torch.randn(kv_heads, prefix, dim, **options)
                scale = dim**-0.5
                visible = torch.ones(length, prefix + length, dtype=torch.bool, device="cuda")
                visible[:, prefix:] = torch.ones(length, length, dtype=torch.bool,
                                                 device="cuda").tril()

                def ours(backward: bool) -> None:
                    out, _ = torch.ops.peftplug.prefix_attention(q, k, v, pk, pv, None, True,
                                                                 scale, 0.0, 0)
                    if backward:
                        out.backward(torch.ones_like(out))

                def floor(backward: bool) -> None:
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                         enable_gqa=kv_heads != heads)
                    if backward:
                        out.backward(torch.ones_like(out))

                def concat(backward: bool) -> None:  # what HF PEFT does: expand, concatenate
                    keys = torch.cat([pk.expand(batch, -1, -1, -1), k], dim=2)
                    values = torch.cat([pv.expand(batch, -1, -1, -1), v], dim=2)
                    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible,
                                                         enable_gqa=kv_heads != heads)
                    if backward:
                        out.backward(torch.ones_like(out))

                cells = []
                for backward in (False, True):
                    mine = milliseconds(lambda: ours(backward), repeats)
                    base = milliseconds(lambda: floor(backward), repeats)
                    other = milliseconds(lambda: concat(backward), repeats)
                    cells.append((mine / base, other / mine))
                print(
                    f"| {kv_heads} | {batch} | {length} | {prefix} | {cells[0][0]:.3f} | "
                    f"{1 + 2 * prefix / length:.3f} | {cells[0][1]:.2f}x | {cells[1][0]:.3f} | "
                    f"{cells[1][1]:.2f}x |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="G1,G2,G3,G4")
    parser.add_argument("--repeats", type=int, default=50)
    options = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("G1-G4 need a GPU: run this on the GPU machine (see benchmarks/RESULTS.md)")
    print(f"device: {torch.cuda.get_device_name()}; extension: {extension_status()}")
    for name in options.only.split(","):
        {"G1": g1, "G2": g2, "G3": g3, "G4": g4}[name.strip()](options.repeats)


if __name__ == "__main__":
    main()
