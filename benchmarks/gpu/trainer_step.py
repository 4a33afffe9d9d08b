"""G5 of shared/design/BENCHMARKS.md: a QLoRA Trainer step on a Llama-8B-shaped model, on a GPU.

    python benchmarks/gpu_trainer_step.py [--layers 8] [--steps 30] [--length 2048]

The model is built from a Llama-3-8B-shaped config (hidden 4096, MLP 14336, 32 query and 8
key/value heads, vocabulary 128256; ``--layers`` of its 32 blocks, so each run fits a lease),
with random weights saved once in bf16. Three runs, each in a fresh process, same data and
seed, gradient checkpointing on, QLoRA r=16 on every linear layer, batch 1 x ``--length``:
HF PEFT over bitsandbytes 4-bit (transformers' quantizer), peftplug's qlora with its CUDA
kernels, and peftplug's qlora with the kernels switched off (PEFTPLUG_USE_EXT=0). Prints
tokens/s, peak GPU memory and the loss curve of each, and the ratios.
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

RUNS = ("peft+bitsandbytes", "peftplug", "peftplug, kernels off")


def build_model(directory: Path, layers: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
        max_position_embeddings=8192, rope_theta=500000.0, torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)


def train(run: str, directory: Path, steps: int, length: int) -> dict:
    """One run in this process; returns tokens/s, peak memory and the loss of every step."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    vocabulary = 128256
    rows = [{"input_ids": ids, "labels": ids}
            for ids in torch.randint(0, vocabulary, (steps, length)).tolist()]
    common = {
        "output_dir": tempfile.mkdtemp(), "max_steps": steps, "per_device_train_batch_size": 1,
        "learning_rate": 1e-4, "gradient_checkpointing": True, "bf16": True,
        "logging_steps": 1, "save_strategy": "no", "report_to": [], "seed": 0,
        "disable_tqdm": True,
    }
    if run == "peft+bitsandbytes":
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            directory, quantization_config=quantization, dtype=torch.bfloat16, device_map="cuda"
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=rows)
    else:
        import peftplug

        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16,
                                                     device_map="cuda")
        config = {"r": 16, "alpha": 32, "target_modules": "all-linear",
                  "compute_dtype": "bfloat16"}
        arguments = peftplug.PeftArguments(peft_plugins=["qlora"],
                                           peft_config={"qlora": config}, **common)
        trainer = Trainer(model=model, args=arguments, train_dataset=rows,
                          **peftplug.trainer_kwargs())
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"tokens_per_second": steps * length / seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.run:  # a child: one run, its figures as JSON on the last line
        print(json.dumps(train(options.run, options.model, options.steps, options.length)))
        return
    with tempfile.TemporaryDirectory() as directory:
        build_model(Path(directory), options.layers)
        results = {}
        for run in RUNS:
            environment = dict(os.environ, PEFTPLUG_USE_EXT="0" if "off" in run else "1")
            child = subprocess.run(
                [sys.executable, __file__, "--run", run, "--model", directory,
                 "--steps", str(options.steps), "--length", str(options.length)],
                env=environment, capture_output=True, text=True,
            )
            if child.returncode != 0:
                print(f"{run}: failed\n{child.stderr[-3000:]}")
                continue
            results[run] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"\nG5: Llama-8B-shaped, {options.layers} layers, S={options.length}, "
          f"{options.steps} steps, QLoRA r=16 all-linear, gradient checkpointing")
    print("| run | tokens/s | peak GiB | first loss | last loss |")
    print("|---|---|---|---|---|")
    for run, figures in results.items():
        losses = figures["losses"]
        print(f"| {run} | {figures['tokens_per_second']:.0f} | {figures['peak_gib']:.2f} | "
              f"{losses[0]:.4f} | {losses[-1]:.4f} |")
    if "peft+bitsandbytes" in results and "peftplug" in results:
        ours, theirs = results["peftplug"], results["peft+bitsandbytes"]
        print(f"\ntokens/s ratio peftplug / PEFT+bnb: "
              f"{ours['tokens_per_second'] / theirs['tokens_per_second']:.2f}x (goal >= 1.4x); "
              f"peak memory {ours['peak_gib']:.2f} vs {theirs['peak_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
