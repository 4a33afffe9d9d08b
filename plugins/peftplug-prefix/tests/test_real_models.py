"""Prefix tuning on the shipped models through the stock Trainer: accuracy rises, loss falls."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from transformers import DataCollatorWithPadding, Trainer

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
from peftplug.data.encode import chat_prompt
from peftplug.metrics import causal_lm_loss, classification_accuracy

pytestmark = pytest.mark.slow


def _train(model, dataset, collate, tmp_path: Path, config: dict, **options) -> Trainer:
    args = peftplug.PeftArguments(
        output_dir=str(tmp_path), peft_plugins=["prefix"], peft_config={"prefix": config},
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
        lr_scheduler_type="linear", **options,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                      **peftplug.trainer_kwargs())
    started = time.perf_counter()
    trainer.train()
    print(f"\nprefix: {(time.perf_counter() - started) / args.max_steps:.3f} s/step")
    return trainer


def test_prefix_tuning_on_the_encoder_improves_accuracy(tmp_path: Path) -> None:
    split = load_reviews(test_size=2000, seed=0)
    model, tokenizer = load_encoder(num_labels=2)
    collate = DataCollatorWithPadding(tokenizer)
    held_out = classification_dataset(tokenizer, split.test[:400])
    before = classification_accuracy(model, held_out, collate)
    config = {"num_virtual_tokens": 20, "init": "text", "projection": False}
    config["init_text"] = "Classify the sentiment of this review:"
    _train(
        model, classification_dataset(tokenizer, split.train[:960]), collate, tmp_path, config,
        max_steps=40, per_device_train_batch_size=16, learning_rate=1e-2, warmup_steps=4,
    )
    after = classification_accuracy(model, held_out, collate)
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    head_dim = model.config.hidden_size // heads
    head = sum(p.numel() for p in model.classifier.modules_to_save["default"].parameters())
    trainable = peftplug.trainable_parameters(model).trainable
    assert trainable == 2 * layers * 20 * heads * head_dim + head
    print(f"prefix on the encoder: trainable {trainable}, accuracy {before:.3f} -> {after:.3f}")
    assert after > before + 0.03, f"held-out accuracy {before:.3f} -> {after:.3f}"


def test_prefix_tuning_on_the_causal_lm_with_checkpointing_lowers_loss_and_generates(
    tmp_path: Path,
) -> None:
    split = load_qa_pairs(test_size=200, seed=0)
    model, tokenizer = load_causal_lm()
    collate = CausalLMCollator(pad_token_id=tokenizer.pad_token_id)
    held_out = causal_lm_dataset(tokenizer, split.test[:32], max_length=64)
    before = causal_lm_loss(model, held_out, collate)
    trainer = _train(
        model, causal_lm_dataset(tokenizer, split.train, max_length=64), collate, tmp_path,
        {"num_virtual_tokens": 20, "projection": False}, gradient_checkpointing=True,
        max_steps=8, per_device_train_batch_size=4, learning_rate=1e-2, warmup_steps=1,
    )
    assert trainer.model.is_activation_checkpointing
    after = causal_lm_loss(model, held_out, collate)
    print(f"prefix on the causal LM: held-out loss {before:.3f} -> {after:.3f}")
    assert after < before - 0.1, f"held-out loss {before:.3f} -> {after:.3f}"
    question = tokenizer(chat_prompt(tokenizer, split.test[0].prompt), return_tensors="pt")
    prompt_length = question["input_ids"].shape[1]
    with torch.no_grad():
        answer = model.eval().generate(**question, max_new_tokens=12, do_sample=False)
        with peftplug.disable_adapters(model):
            plain = model.generate(**question, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(answer[0, prompt_length:], skip_special_tokens=True)
    print(f"generated with the prefix: {text!r}; without: "
          f"{tokenizer.decode(plain[0, prompt_length:], skip_special_tokens=True)!r}")
    assert text.strip()
    assert not torch.equal(answer, plain)
