"""``make demo``: LoRA on the shipped encoder and review snippets, through the stock Trainer."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from transformers import DataCollatorWithPadding, Trainer

import peftplug
from peftplug.data import classification_dataset, encoder_path, load_encoder, load_reviews
from peftplug.metrics import classification_accuracy


def _directory_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def run(steps: int, out: Path) -> None:
    """Train, evaluate before and after, save the adapter, and print what it cost."""
    split = load_reviews(test_size=2000, seed=0)
    model, tokenizer = load_encoder(num_labels=2)
    train = classification_dataset(tokenizer, split.train, max_length=64)
    test = classification_dataset(tokenizer, split.test, max_length=64)
    collate = DataCollatorWithPadding(tokenizer)
    print(f"model: all-MiniLM-L6-v2 ({encoder_path()})")
    print(f"data: {len(train)} train / {len(test)} held-out review snippets")
    before = classification_accuracy(model, test, collate)
    print(f"held-out accuracy before training: {before:.3f}")
    args = peftplug.PeftArguments(
        output_dir=str(out / "trainer"),
        peft_plugins=["lora"],
        peft_config={"lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"]}},
        max_steps=steps,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        warmup_steps=steps // 10,
        lr_scheduler_type="linear",
        logging_steps=max(steps // 10, 1),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train, data_collator=collate,
        **peftplug.trainer_kwargs(),
    )
    print(peftplug.trainable_parameters(model))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    after = classification_accuracy(model, test, collate)
    adapter = peftplug.save_adapter(model, out / "adapter")
    full_bytes = _directory_bytes(encoder_path())
    print(f"\nheld-out accuracy: {before:.3f} -> {after:.3f} after {steps} LoRA steps ({seconds:.0f} s)")
    print(
        f"adapter on disk: {_directory_bytes(adapter):,} bytes in {adapter} "
        f"(the full model directory: {full_bytes:,} bytes)"
    )


def main() -> None:
    """Parse ``--steps`` and ``--out`` and run the demo."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args()
    if arguments.out is None:
        with tempfile.TemporaryDirectory() as directory:
            run(arguments.steps, Path(directory))
    else:
        run(arguments.steps, arguments.out)


if __name__ == "__main__":
    main()
