"""G5 of shared/design/BENCHMARKS.md: a QLoRA Trainer step on a Llama-8B-shaped model, on a GPU.

    python benchmarks/gpu/trainer_step.py [--layers 8] [--steps 20] [--length 2048]
                                          [--json trainer.json] [--budget-s 200]
                                          [--device cpu --tiny]

The model is built from a Llama-3-8B-shaped config (hidden 4096, MLP 14336, 32 query and 8
key/value heads, vocabulary 128256; ``--layers`` of its 32 blocks, so a run fits a lease), with
random weights saved once in bf16. Three runs, each in a fresh process, same data and seed,
gradient checkpointing on, QLoRA r=16 on every linear layer, batch 1 x ``--length``: HF PEFT
over bitsandbytes 4-bit (transformers' quantizer), peftplug's qlora with its CUDA kernels, and
peftplug's qlora with the kernels switched off (PEFTPLUG_USE_EXT=0). Records tokens/s (of the
whole ``trainer.train()``), peak GPU memory and each step's loss, and the ratios; each run is
written to the JSON as it ends. ``--device cpu --tiny`` is the CPU rehearsal of run.sh
--dry-run: a 2-layer model of 64 hidden units, whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_measure import Deadline, Results, add_run_arguments, chosen_device

PEFT_RUN = "peft+bitsandbytes"
OURS = "peftplug"
OURS_WITHOUT_KERNELS = "peftplug, kernels off"
RUNS = (PEFT_RUN, OURS, OURS_WITHOUT_KERNELS)
LLAMA_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 512}


def build_model(directory: Path, layers: int, shape: dict, device: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=layers, max_position_embeddings=8192,
                         rope_theta=500000.0, torch_dtype="bfloat16", **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)


def train(run: str, directory: Path, steps: int, length: int, device: str) -> dict:
    """One run in this process; returns tokens/s, peak memory and the loss of every step."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

    from peftplug.ops import extension_status

    torch.manual_seed(0)
    vocabulary = AutoConfig.from_pretrained(directory).vocab_size
    rows = [{"input_ids": ids, "labels": ids}
            for ids in torch.randint(0, vocabulary, (steps, length)).tolist()]
    common = {
        "output_dir": tempfile.mkdtemp(), "max_steps": steps, "per_device_train_batch_size": 1,
        "learning_rate": 1e-4, "gradient_checkpointing": True, "bf16": True,
        "logging_steps": 1, "save_strategy": "no", "report_to": [], "seed": 0,
        "disable_tqdm": True, "use_cpu": device == "cpu",
    }
    if run == PEFT_RUN:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            directory, quantization_config=quantization, dtype=torch.bfloat16, device_map=device
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=rows)
    else:
        import peftplug

        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16,
                                                     device_map=device)
        config = {"r": 16, "alpha": 32, "target_modules": "all-linear",
                  "compute_dtype": "bfloat16"}
        arguments = peftplug.PeftArguments(peft_plugins=["qlora"],
                                           peft_config={"qlora": config}, **common)
        trainer = Trainer(model=model, args=arguments, train_dataset=rows,
                          **peftplug.trainer_kwargs())
    on_gpu = device == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"tokens_per_second": steps * length / seconds, "seconds": seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
            "losses": losses, "extension": extension_status()}


def missing_for(run: str) -> str | None:
    """Why a run cannot start here (a package it needs is not installed), or None."""
    if run != PEFT_RUN:
        return None
    import importlib.util

    for package in ("bitsandbytes", "peft"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (carry its wheel: benchmarks/gpu/README.md)"
    return None


def run_child(run: str, options: argparse.Namespace, directory: str, seconds: float | None) -> dict:
    """One run in a fresh process; its figures, or why it failed."""
    environment = dict(os.environ, PEFTPLUG_USE_EXT="0" if run == OURS_WITHOUT_KERNELS else "1")
    command = [sys.executable, __file__, "--run", run, "--model", directory, "--device",
               options.device, "--steps", str(options.steps), "--length", str(options.length)]
    try:
        child = subprocess.run(command, env=environment, capture_output=True, text=True,
                               timeout=seconds)
    except subprocess.TimeoutExpired:
        return {"failed": f"stopped after {seconds:.0f} s (the --budget-s ran out)"}
    if child.returncode != 0:
        return {"failed": f"exit {child.returncode}", "stderr_tail": child.stderr[-3000:]}
    return json.loads(child.stdout.strip().splitlines()[-1])


def compare(results: dict) -> dict:
    """The G5 ratios: ours against PEFT + bitsandbytes, and the loss curves' largest gap."""
    ours, theirs = results.get(OURS, {}), results.get(PEFT_RUN, {})
    if "losses" not in ours or "losses" not in theirs:
        return {"note": "peftplug's run or PEFT's did not finish: no ratio"}
    gaps = [abs(a - b) for a, b in zip(ours["losses"], theirs["losses"], strict=False)]
    memory = None
    if ours["peak_gib"] is not None and theirs["peak_gib"] is not None:
        memory = ours["peak_gib"] / theirs["peak_gib"]
    return {"tokens_per_second_vs_peft": ours["tokens_per_second"] / theirs["tokens_per_second"],
            "peak_memory_vs_peft": memory, "largest_loss_gap": max(gaps, default=None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--length", type=int, default=2048)
    add_run_arguments(parser, "run")
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.run:  # a child: one run, its figures as JSON on the last line
        figures = train(options.run, options.model, options.steps, options.length, options.device)
        print(json.dumps(figures))
        return
    import torch

    chosen_device(parser, options)
    deadline = Deadline(options.budget_s)
    shape = TINY if options.tiny else LLAMA_8B
    settings = {"layers": options.layers, "steps": options.steps, "length": options.length,
                "model": "tiny" if options.tiny else "Llama-8B-shaped", **shape,
                "qlora": "r=16, alpha=32, all-linear, double quantization, bf16",
                "gradient_checkpointing": True, "batch": 1}
    results = Results(options.json, {"device": options.device, "torch": torch.__version__,
                                     "settings": settings})
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as directory:
        build_model(Path(directory), options.layers, shape, options.device)
        for run in RUNS:
            missing = missing_for(run)
            if deadline.passed():
                missing = "the --budget-s ran out before it"
            figures[run] = (
                {"failed": f"not run: {missing}"} if missing
                else run_child(run, options, directory, deadline.left())
            )
            results.add("G5", {"run": run, **figures[run]})
            _print_run(run, figures[run])
    ratios = compare(figures)
    results.note("G5", "ratios", ratios)
    print(f"G5 ratios: {json.dumps(ratios)}", flush=True)
    failed = [run for run, figure in figures.items() if "failed" in figure]
    if failed:
        sys.exit(f"G5 incomplete: {', '.join(failed)} did not finish (see trainer.json)")


def _print_run(run: str, figures: dict) -> None:
    if "failed" in figures:
        print(f"G5 {run}: failed: {figures['failed']}\n{figures.get('stderr_tail', '')}",
              flush=True)
        return
    peak = "n/a" if figures["peak_gib"] is None else f"{figures['peak_gib']:.2f} GiB"
    losses = figures["losses"]
    print(f"G5 {run}: {figures['tokens_per_second']:.0f} tokens/s, peak {peak}, loss "
          f"{losses[0]:.4f} -> {losses[-1]:.4f}", flush=True)


if __name__ == "__main__":
    main()
