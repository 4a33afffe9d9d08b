"""C4: one Trainer step of peftplug LoRA against HF PEFT's LoRA (and full fine-tuning).

Step time: the variants live in one process and take turns, step by step, on the same batches;
each figure is the median over the measured rounds, so machine noise hits all of them alike.
Peak memory: each variant runs alone in a subprocess, and its peak RSS (VmHWM) is read after
the same number of steps.

    python benchmarks/trainer_step.py --task encoder --targets query,value
    python benchmarks/trainer_step.py --task causal-lm --targets all-linear --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

import peftplug
from peftplug.data import (
    CausalLMCollator,
    causal_lm_dataset,
    classification_dataset,
    load_causal_lm,
    load_encoder,
    load_qa_pairs,
    load_reviews,
)

VARIANTS = ("peftplug-lora", "peft-lora", "full")


@dataclass
class Workload:
    """A model factory, fixed batches and LoRA targets for one task."""

    make_model: Callable[[], torch.nn.Module]
    batches: list[dict[str, torch.Tensor]]
    targets: list[str] | str
    task_type: str
    learning_rate: float


def workload(task: str, targets: str, batches: int) -> Workload:
    """The shipped model and data of ``task`` (BASELINE.md's settings)."""
    target_modules: list[str] | str = targets if targets == "all-linear" else targets.split(",")
    if task == "encoder":
        _, tokenizer = load_encoder(num_labels=2)
        records = load_reviews().train[: 16 * batches]
        rows = classification_dataset(tokenizer, records, max_length=64)
        collate = DataCollatorWithPadding(tokenizer)
        size, make, task_type = 16, lambda: load_encoder(num_labels=2)[0], "SEQ_CLS"
    else:
        _, tokenizer = load_causal_lm()
        rows = causal_lm_dataset(tokenizer, load_qa_pairs().train[: 4 * batches], max_length=128)
        collate = CausalLMCollator(pad_token_id=tokenizer.pad_token_id)
        size, make, task_type = 4, lambda: load_causal_lm()[0], "CAUSAL_LM"
    chunks = [collate(rows[i : i + size]) for i in range(0, size * batches, size)]
    return Workload(make, chunks, target_modules, task_type, 5e-4)


def trainer_for(variant: str, load: Workload, output_dir: str) -> Trainer:
    """A stock Trainer with its optimizer created, for one variant."""
    torch.manual_seed(0)
    model = load.make_model()
    common = dict(output_dir=output_dir, learning_rate=load.learning_rate, report_to=[], use_cpu=True)
    lora = {"r": 8, "alpha": 16, "target_modules": load.targets}
    if variant == "peftplug-lora":
        args = peftplug.PeftArguments(peft_plugins=["lora"], peft_config={"lora": lora}, **common)
        trainer = Trainer(model=model, args=args, **peftplug.trainer_kwargs())
    elif variant == "peft-lora":
        import peft

        config = peft.LoraConfig(
            r=8, lora_alpha=16, target_modules=load.targets, task_type=load.task_type
        )
        trainer = Trainer(model=peft.get_peft_model(model, config), args=TrainingArguments(**common))
    else:
        trainer = Trainer(model=model, args=TrainingArguments(**common))
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by train()'s loop, which we bypass
    return trainer


def step(trainer: Trainer, batch: dict[str, torch.Tensor]) -> float:
    """One Trainer training step plus the optimizer step; returns seconds."""
    started = time.perf_counter()
    trainer.training_step(trainer.model, dict(batch))
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def time_side_by_side(load: Workload, warmup: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of every variant, taking turns step by step."""
    with tempfile.TemporaryDirectory() as directory:
        trainers = {v: trainer_for(v, load, directory) for v in VARIANTS}
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for index in range(warmup + rounds):
            batch = load.batches[index % len(load.batches)]
            order = VARIANTS[index % 3 :] + VARIANTS[: index % 3]  # rotate who goes first
            for variant in order:
                seconds = step(trainers[variant], batch)
                if index >= warmup:
                    times[variant].append(seconds)
    return {v: statistics.median(t) for v, t in times.items()}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_alone(variant: str, arguments: argparse.Namespace) -> dict[str, float]:
    """Run one variant alone in a subprocess; its peak RSS after the same steps."""
    command = [
        sys.executable, __file__, "--task", arguments.task, "--targets", arguments.targets,
        "--rounds", str(arguments.rounds), "--warmup", str(arguments.warmup), "--alone", variant,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_alone(variant: str, arguments: argparse.Namespace) -> None:
    load = workload(arguments.task, arguments.targets, arguments.batches)
    with tempfile.TemporaryDirectory() as directory:
        trainer = trainer_for(variant, load, directory)
        for index in range(arguments.warmup + arguments.rounds):
            step(trainer, load.batches[index % len(load.batches)])
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "trainable": trainable}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["encoder", "causal-lm"], default="encoder")
    parser.add_argument("--targets", default="query,value", help="comma-separated names or all-linear")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--alone", choices=VARIANTS, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.alone:
        run_alone(arguments.alone, arguments)
        return
    load = workload(arguments.task, arguments.targets, arguments.batches)
    seconds = time_side_by_side(load, arguments.warmup, arguments.rounds)
    memory = {v: memory_alone(v, arguments) for v in VARIANTS}
    print(f"task={arguments.task} targets={arguments.targets} threads={torch.get_num_threads()} "
          f"rounds={arguments.rounds} torch={torch.__version__} cpus={os.cpu_count()}")
    print("| variant | trainable | s/step | vs PEFT | vs full FT | peak RSS MB | vs PEFT |")
    print("|---|---|---|---|---|---|---|")
    for variant in VARIANTS:
        mem = memory[variant]["peak_rss_mb"]
        print(
            f"| {variant} | {memory[variant]['trainable']:,} | {seconds[variant]:.3f} | "
            f"{seconds[variant] / seconds['peft-lora']:.2f}x | {seconds[variant] / seconds['full']:.2f}x | "
            f"{mem:.0f} | {mem / memory['peft-lora']['peak_rss_mb']:.2f}x |"
        )


if __name__ == "__main__":
    main()
