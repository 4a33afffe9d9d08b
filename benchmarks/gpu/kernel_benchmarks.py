"""G1-G4 of shared/design/BENCHMARKS.md: the CUDA kernels against their anchors, in one process.

    python benchmarks/gpu/kernel_benchmarks.py [--only G1,G2,G3,G4] [--repeats 30] [--budget-s 170]
                                     [--json kernels.json] [--device cpu --tiny]

Every row is timed after warm-up (median of CUDA-event times) beside its anchors: bitsandbytes
``matmul_4bit`` and HF PEFT's LoRA over a bitsandbytes ``Linear4bit`` (when installed), the
dequantize-then-cuBLAS path, bf16 cuBLAS on a float weight, and SDPA with and without the prefix.
G1 also gives the share of the bandwidth roofline: the bytes that must move (the NF4 weight
with double quantization, the activations in and the output out) over the copy bandwidth
measured here. Decode operands are rotated among copies several times the L2's size, so the
weight is read from memory, not from the cache. Each row also records the kernel's relative
error against the fp32 computation on the same inputs. ``--budget-s`` stops at the first row
past the budget (recorded as such); ``--device cpu --tiny`` is the CPU rehearsal (run.sh
--dry-run): the same code on tiny shapes, whose times mean nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from gpu_measure import (
    Clock,
    Deadline,
    Results,
    add_run_arguments,
    chosen_device,
    relative_error,
)
from torch.nn import functional as F

import peftplug.ops  # noqa: F401  (registers the ops, loads the extension)
from peftplug.ops import extension_status
from peftplug.ops.nf4 import dequantize_reference
from peftplug.quant import quantize_nf4

DTYPE = torch.bfloat16
BLOCKSIZE = 64
CACHE_MULTIPLE = 4  # rotate among copies of the decode operands totalling this many L2s
MAX_COPIES = 64


@dataclass(frozen=True)
class Sizes:
    decode_shapes: tuple[tuple[int, int], ...]  # (N, K)
    decode_rows: tuple[int, ...]
    prefill_shapes: tuple[tuple[int, int], ...]
    prefill_rows: tuple[int, ...]
    lora_shape: tuple[int, int]
    lora_ranks: tuple[int, ...]
    lora_rows: tuple[int, ...]
    heads: int
    head_dim: int
    kv_heads: tuple[int, ...]
    batch_lengths: tuple[tuple[int, int], ...]
    prefixes: tuple[int, ...]


FULL = Sizes(
    decode_shapes=((4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096)),
    decode_rows=(1, 2, 4, 8, 16, 32, 64),
    prefill_shapes=((4096, 4096), (11008, 4096)),
    prefill_rows=(256, 1024, 4096, 16384),
    lora_shape=(4096, 4096),
    lora_ranks=(8, 16, 64),
    lora_rows=(512, 2048, 8192, 16384),
    heads=32,
    head_dim=128,
    kv_heads=(32, 8),
    batch_lengths=((8, 512), (4, 2048), (1, 8192)),
    prefixes=(10, 50, 200),
)
TINY = Sizes(
    decode_shapes=((128, 256),),
    decode_rows=(1, 4),
    prefill_shapes=((128, 256),),
    prefill_rows=(32,),
    lora_shape=(128, 256),
    lora_ranks=(8,),
    lora_rows=(32,),
    heads=4,
    head_dim=32,
    kv_heads=(4, 2),
    batch_lengths=((2, 64),),
    prefixes=(4,),
)


@dataclass
class Bench:
    """What every section needs: where to run, how to time, where to write, when to stop."""

    device: torch.device
    clock: Clock
    results: Results
    deadline: Deadline
    sizes: Sizes
    copy_bandwidth: float | None  # bytes/s, read + write; None off the GPU

    def out_of_time(self, section: str) -> bool:
        if self.deadline.passed():
            self.results.note(section, "stopped", "the --budget-s ran out before the next row")
            print(f"{section}: stopped, the time budget ran out", flush=True)
            return True
        return False

    def copies(self, nbytes: int) -> int:
        """How many copies of operands of ``nbytes`` bytes outgrow the L2 cache."""
        if self.device.type != "cuda":
            return 1
        cache = getattr(torch.cuda.get_device_properties(self.device), "L2_cache_size", 64 << 20)
        return max(1, min(MAX_COPIES, math.ceil(CACHE_MULTIPLE * cache / nbytes)))


def measure_copy_bandwidth(clock: Clock, device: torch.device) -> float | None:
    """Bytes per second of a device-to-device copy of 1 GiB (read + write); None off the GPU."""
    if device.type != "cuda":
        return None
    source = torch.empty(2**30, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = clock.milliseconds(lambda _: target.copy_(source)) / 1e3
    return 2 * 2**30 / seconds


def bitsandbytes():  # noqa: ANN201 (the module, or None)
    try:
        import bitsandbytes
    except ImportError:
        return None
    return bitsandbytes


def ratio(anchor: float | None, ours: float) -> float | None:
    """How many times faster ours is than the anchor (None when the anchor was not run)."""
    return None if anchor is None else anchor / ours


class Nf4Operands:
    """One random bf16 weight, its NF4 form (double quantization) and its bitsandbytes form."""

    def __init__(self, bench: Bench, out_features: int, in_features: int) -> None:
        self.shape = (out_features, in_features)
        self.weight = torch.randn(*self.shape, device=bench.device, dtype=DTYPE) * 0.02
        quantized = quantize_nf4(self.weight, BLOCKSIZE, double_quant=True)
        self.packed, self.absmax = quantized.packed, quantized.block_absmax()
        self.nbytes = quantized.nbytes
        # rank 0 adapters in the activations' dtype, as NF4Linear.forward passes them
        self.empty_a = torch.empty(0, in_features, device=bench.device, dtype=DTYPE)
        self.empty_b = torch.empty(out_features, 0, device=bench.device, dtype=DTYPE)
        library = bitsandbytes()
        self.bnb_state = None
        if library is not None:
            self.bnb_packed, self.bnb_state = library.functional.quantize_4bit(
                self.weight, quant_type="nf4", compress_statistics=True
            )

    def linear(self, x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
        return torch.ops.peftplug.nf4_lora_linear(
            x, packed, absmax, self.shape[0], BLOCKSIZE, None, x, self.empty_a, self.empty_b, 0.0
        )

    def dequantized(self, packed: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
        return torch.ops.peftplug.nf4_dequantize(packed, absmax, list(self.shape), BLOCKSIZE, DTYPE)

    def fp32_weight(self) -> torch.Tensor:
        """The weight the NF4 codes stand for, by the pure-PyTorch reference, in fp32."""
        return dequantize_reference(self.packed, self.absmax, self.shape, BLOCKSIZE, torch.float32)


def g1(bench: Bench) -> None:
    """Decode: NF4 linear forward at M <= 64, against bitsandbytes and bf16 cuBLAS."""
    library = bitsandbytes()
    for out_features, in_features in bench.sizes.decode_shapes:
        operands = Nf4Operands(bench, out_features, in_features)
        copies = bench.copies(operands.nbytes)
        quantized = [(operands.packed.clone(), operands.absmax.clone()) for _ in range(copies)]
        dense = [operands.weight.clone() for _ in range(bench.copies(operands.weight.nbytes))]
        theirs = []
        if library is not None:
            theirs = [operands.bnb_packed.clone() for _ in range(copies)]
        reference = operands.fp32_weight()
        for rows in bench.sizes.decode_rows:
            if bench.out_of_time("G1"):
                return
            x = torch.randn(rows, in_features, device=bench.device, dtype=DTYPE)
            exact = F.linear(x.float(), reference)
            error = relative_error(operands.linear(x, *quantized[0]), exact)
            ours = bench.clock.milliseconds(lambda i: operands.linear(x, *quantized[i % copies]))
            dequantize_then_linear = bench.clock.milliseconds(
                lambda i: F.linear(x, operands.dequantized(*quantized[i % copies]))
            )
            bf16 = bench.clock.milliseconds(lambda i: F.linear(x, dense[i % len(dense)]))
            bnb = None
            if library is not None:
                bnb = bench.clock.milliseconds(
                    lambda i: library.matmul_4bit(
                        x, theirs[i % copies].t(), quant_state=operands.bnb_state
                    )
                )
            needed = operands.nbytes + x.element_size() * rows * (in_features + out_features)
            roofline = None
            if bench.copy_bandwidth is not None:
                roofline = needed / bench.copy_bandwidth * 1e3 / ours
            row = {
                "N": out_features, "K": in_features, "M": rows, "ours_ms": ours,
                "roofline_fraction": roofline, "bitsandbytes_ms": bnb,
                "dequantize_linear_ms": dequantize_then_linear, "bf16_linear_ms": bf16,
                "vs_bitsandbytes": ratio(bnb, ours),
                "vs_dequantize_linear": ratio(dequantize_then_linear, ours),
                "vs_bf16_linear": ratio(bf16, ours), "relative_error": error,
                "operand_copies": copies,
            }
            bench.results.add("G1", row)
            print(f"G1 {out_features}x{in_features} M={rows}: {ours:.4f} ms, roofline "
                  f"{_share(roofline)}, vs bnb {_times(row['vs_bitsandbytes'])}, vs bf16 "
                  f"{_times(row['vs_bf16_linear'])}, error {error:.1e}", flush=True)


def g2(bench: Bench) -> None:
    """Prefill/training: NF4 forward and input gradient at large M, against bf16 cuBLAS."""
    for out_features, in_features in bench.sizes.prefill_shapes:
        operands = Nf4Operands(bench, out_features, in_features)
        reference = operands.fp32_weight()
        packed, absmax = operands.packed, operands.absmax
        for rows in bench.sizes.prefill_rows:
            if bench.out_of_time("G2"):
                return
            x = torch.randn(rows, in_features, device=bench.device, dtype=DTYPE)
            grad = torch.randn(rows, out_features, device=bench.device, dtype=DTYPE)

            def input_grad() -> torch.Tensor:
                return torch.ops.peftplug.nf4_lora_linear_backward(
                    grad, packed, absmax, out_features, BLOCKSIZE, x, operands.empty_a,
                    operands.empty_b, 0.0, True,
                )[0]

            forward_error = relative_error(operands.linear(x, packed, absmax),
                                           F.linear(x.float(), reference))
            grad_error = relative_error(input_grad(), grad.float() @ reference)
            times = {
                "ours_forward_ms": lambda _: operands.linear(x, packed, absmax),
                "dequantize_cublas_forward_ms":
                    lambda _: F.linear(x, operands.dequantized(packed, absmax)),
                "bf16_cublas_forward_ms": lambda _: F.linear(x, operands.weight),
                "ours_input_grad_ms": lambda _: input_grad(),
                "dequantize_cublas_input_grad_ms":
                    lambda _: grad @ operands.dequantized(packed, absmax),
                "bf16_cublas_input_grad_ms": lambda _: grad @ operands.weight,
            }
            row = {"N": out_features, "K": in_features, "M": rows}
            row.update({name: bench.clock.milliseconds(f) for name, f in times.items()})
            row["forward_over_bf16"] = row["ours_forward_ms"] / row["bf16_cublas_forward_ms"]
            row["input_grad_over_bf16"] = (
                row["ours_input_grad_ms"] / row["bf16_cublas_input_grad_ms"]
            )
            row["relative_error"] = {"forward": forward_error, "input_grad": grad_error}
            bench.results.add("G2", row)
            print(f"G2 {out_features}x{in_features} M={rows}: forward "
                  f"{row['forward_over_bf16']:.3f}x bf16 cuBLAS, input grad "
                  f"{row['input_grad_over_bf16']:.3f}x, errors {forward_error:.1e} "
                  f"{grad_error:.1e}", flush=True)


def peft_bitsandbytes_lora(
    operands: Nf4Operands, rank: int, scale: float
) -> torch.nn.Module | None:
    """HF PEFT's LoRA over a bitsandbytes 4-bit layer holding the same weight, or None."""
    library = bitsandbytes()
    try:
        import peft
    except ImportError:
        return None
    if library is None:
        return None
    out_features, in_features = operands.shape
    layer = library.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=DTYPE,
                                  quant_type="nf4", compress_statistics=True)
    layer.weight = library.nn.Params4bit(operands.weight.cpu(), requires_grad=False,
                                         quant_type="nf4", compress_statistics=True)
    config = peft.LoraConfig(r=rank, lora_alpha=scale * rank, target_modules=["0"],
                             lora_dropout=0.0)
    model = peft.get_peft_model(torch.nn.Sequential(layer.to(operands.weight.device)), config)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(parameter, std=0.01)
    return model


def g3(bench: Bench) -> None:
    """QLoRA linear forward + backward (input and LoRA gradients) against PEFT + bitsandbytes."""
    out_features, in_features = bench.sizes.lora_shape
    operands = Nf4Operands(bench, out_features, in_features)
    reference = operands.fp32_weight()
    scale = 2.0
    for rank in bench.sizes.lora_ranks:
        lora_a = (torch.randn(rank, in_features, device=bench.device) * 0.01).requires_grad_()
        lora_b = (torch.randn(out_features, rank, device=bench.device) * 0.01).requires_grad_()
        peft_model = peft_bitsandbytes_lora(operands, rank, scale)
        for rows in bench.sizes.lora_rows:
            if bench.out_of_time("G3"):
                return
            x = torch.randn(rows, in_features, device=bench.device, dtype=DTYPE,
                            requires_grad=True)
            grad = torch.randn(rows, out_features, device=bench.device, dtype=DTYPE)

            def ours() -> tuple[torch.Tensor, ...]:  # the LoRA branch in the adapter's fp32
                y = torch.ops.peftplug.nf4_lora_linear(
                    x, operands.packed, operands.absmax, out_features, BLOCKSIZE, None,
                    x.float(), lora_a, lora_b, scale,
                )
                return (y, *torch.autograd.grad(y, (x, lora_a, lora_b), grad))

            def bf16_lora(_: int) -> None:
                a, b = lora_a.to(DTYPE), lora_b.to(DTYPE)
                y = F.linear(x, operands.weight) + scale * F.linear(F.linear(x, a), b)
                torch.autograd.grad(y, (x, lora_a, lora_b), grad)

            def floor(_: int) -> None:  # the frozen weight's forward and input-gradient GEMMs
                F.linear(x.detach(), operands.weight)
                grad @ operands.weight

            exact_x = x.detach().float()
            exact = F.linear(exact_x, reference) + scale * F.linear(F.linear(exact_x, lora_a),
                                                                    lora_b)
            error = relative_error(ours()[0], exact)
            row = {"N": out_features, "K": in_features, "r": rank, "M": rows,
                   "ours_ms": bench.clock.milliseconds(lambda _: ours()),
                   "bf16_lora_ms": bench.clock.milliseconds(bf16_lora),
                   "two_bf16_gemms_ms": bench.clock.milliseconds(floor),
                   "peft_bitsandbytes_ms": None, "relative_error": error}
            if peft_model is not None:
                trainable = [p for p in peft_model.parameters() if p.requires_grad]

                def peft_step(_: int) -> None:
                    torch.autograd.grad(peft_model(x), (x, *trainable), grad)

                row["peft_bitsandbytes_ms"] = bench.clock.milliseconds(peft_step)
            row["vs_peft_bitsandbytes"] = ratio(row["peft_bitsandbytes_ms"], row["ours_ms"])
            row["vs_bf16_lora"] = ratio(row["bf16_lora_ms"], row["ours_ms"])
            row["over_floor"] = row["ours_ms"] / row["two_bf16_gemms_ms"]
            bench.results.add("G3", row)
            print(f"G3 r={rank} M={rows}: vs PEFT+bnb {_times(row['vs_peft_bitsandbytes'])}, "
                  f"vs bf16 LoRA {_times(row['vs_bf16_lora'])}, "
                  f"{row['over_floor']:.2f}x the floor, error {error:.1e}", flush=True)


def g4(bench: Bench) -> None:
    """Prefix attention, causal, bf16, forward and forward+backward, against SDPA."""
    sizes = bench.sizes
    heads, dim = sizes.heads, sizes.head_dim
    for kv_heads in sizes.kv_heads:
        for batch, length in sizes.batch_lengths:
            for prefix in sizes.prefixes:
                if bench.out_of_time("G4"):
                    return
                bench.results.add("G4", _prefix_row(bench, heads, kv_heads, dim, batch, length,
                                                    prefix))


def _prefix_row(bench: Bench, heads: int, kv_heads: int, dim: int, batch: int, length: int,
                prefix: int) -> dict:
    options = {"device": bench.device, "dtype": DTYPE, "requires_grad": True}
    q = torch.randn(batch, heads, length, dim, **options)
    k = torch.randn(batch, kv_heads, length, dim, **options)
    v = torch.randn(batch, kv_heads, length, dim, **options)
    pk = torch.randn(kv_heads, prefix, dim, **options)
    pv = torch.randn(kv_heads, prefix, dim, **options)
    grad = torch.randn(batch, heads, length, dim, device=bench.device, dtype=DTYPE)
    scale, gqa = dim**-0.5, kv_heads != heads
    visible = torch.ones(length, prefix + length, dtype=torch.bool, device=bench.device)
    visible[:, prefix:] = torch.ones(length, length, dtype=torch.bool,
                                     device=bench.device).tril()

    def ours(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.ops.peftplug.prefix_attention(*inputs, None, True, scale, 0.0, 0)[0]

    def concat(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """HF PEFT's path: the prefix concatenated to the cache, and transformers' SDPA
        attention, which repeats the key/value heads when there is a mask."""
        query, key, value, prefix_key, prefix_value = inputs
        groups = heads // kv_heads
        keys = torch.cat([prefix_key.expand(batch, -1, -1, -1), key], dim=2)
        values = torch.cat([prefix_value.expand(batch, -1, -1, -1), value], dim=2)
        return F.scaled_dot_product_attention(
            query, keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1),
            attn_mask=visible, scale=scale,
        )

    def floor(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return F.scaled_dot_product_attention(*inputs[:3], is_causal=True, scale=scale,
                                              enable_gqa=gqa)

    everything = (q, k, v, pk, pv)

    def timed(function: Callable, inputs: tuple[torch.Tensor, ...], backward: bool) -> float:
        def call(_: int) -> None:
            out = function(inputs)
            if backward:
                torch.autograd.grad(out, inputs, grad)

        return bench.clock.milliseconds(call)

    exact = concat(tuple(t.detach().float() for t in everything))
    row = {"kv_heads": kv_heads, "B": batch, "S": length, "P": prefix,
           "bound": 1 + 2 * prefix / length,
           "relative_error": relative_error(ours(everything), exact)}
    for mode, backward in (("forward", False), ("forward_backward", True)):
        mine = timed(ours, everything, backward)
        base = timed(floor, everything[:3], backward)
        other = timed(concat, everything, backward)
        row[mode] = {"ours_ms": mine, "no_prefix_sdpa_ms": base, "concat_sdpa_ms": other,
                     "over_floor": mine / base, "vs_concat": other / mine}
    print(f"G4 kv={kv_heads} B={batch} S={length} P={prefix}: forward "
          f"{row['forward']['over_floor']:.3f}x floor (bound {row['bound']:.3f}), "
          f"{row['forward']['vs_concat']:.2f}x vs concat; fwd+bwd "
          f"{row['forward_backward']['over_floor']:.3f}x floor, "
          f"{row['forward_backward']['vs_concat']:.2f}x vs concat; "
          f"error {row['relative_error']:.1e}", flush=True)
    return row


def _times(value: float | None) -> str:
    return "not run" if value is None else f"{value:.2f}x"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


SECTIONS = {"G1": g1, "G2": g2, "G3": g3, "G4": g4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="G1,G2,G3,G4", help="comma-separated sections")
    parser.add_argument("--repeats", type=int, default=30)
    add_run_arguments(parser, "row")
    options = parser.parse_args()
    sections = [name.strip() for name in options.only.split(",")]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    device = chosen_device(parser, options)
    clock = Clock(device, options.repeats)
    deadline = Deadline(options.budget_s)
    bandwidth = measure_copy_bandwidth(clock, device)
    header = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "bitsandbytes": getattr(bitsandbytes(), "__version__", None),
        "extension": extension_status(), "repeats": options.repeats,
        "sizes": "tiny" if options.tiny else "full", "copy_bandwidth_bytes_per_s": bandwidth,
    }
    results = Results(options.json, header)
    print(f"device {header['device']}, torch {header['torch']}, bitsandbytes "
          f"{header['bitsandbytes']}, copy bandwidth "
          f"{'n/a' if bandwidth is None else f'{bandwidth / 1e12:.2f} TB/s'}", flush=True)
    bench = Bench(device, clock, results, deadline, TINY if options.tiny else FULL, bandwidth)
    for name in sections:
        SECTIONS[name](bench)
    problems = unfinished(results.document, sections)
    if problems:
        sys.exit("G1-G4 incomplete: " + "; ".join(problems))


def unfinished(document: dict, sections: list[str]) -> list[str]:
    """What keeps the figures from answering BENCHMARKS.md: sections cut by the budget, and
    anchors that could not run (bitsandbytes for G1, HF PEFT over bitsandbytes for G3)."""
    problems = [f"{name} stopped by --budget-s (re-run it with --only)"
                for name in sections if "stopped" in document["sections"].get(name, {})]
    needs = {"G1": "bitsandbytes_ms", "G3": "peft_bitsandbytes_ms"}
    for name, anchor in needs.items():
        rows = document["sections"].get(name, {}).get("rows", [])
        if any(row[anchor] is None for row in rows):
            problems.append(f"{name}'s anchor {anchor[:-3]} did not run (is it installed?)")
    return problems


if __name__ == "__main__":
    main()
