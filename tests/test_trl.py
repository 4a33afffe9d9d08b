"""TRL's SFT, DPO, reward and GRPO trainers train a tiny Llama through peftplug, unsubclassed."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaForSequenceClassification, PreTrainedModel, PreTrainedTokenizerFast

import peftplug
from peftplug.testing.tiny_models import VOCAB_SIZE, tiny_llama
from peftplug.trl_support import AdaptersDisabled

trl = pytest.importorskip("trl")

LR = 1e-2
RATIO = 16
PEFT = {
    "peft_plugins": ["lora"],
    "peft_config": {
        "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"], "loraplus_lr_ratio": RATIO}
    },
}
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0-2 are tiny_llama's pad, bos and eos
WORDS = [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIALS))]


# TRL's config first, so that its defaults win over TrainingArguments' (dataclass field order).
@dataclasses.dataclass
class PeftSFTConfig(trl.SFTConfig, peftplug.PeftArguments):
    """SFTConfig plus peftplug's fields."""


@dataclasses.dataclass
class PeftDPOConfig(trl.DPOConfig, peftplug.PeftArguments):
    """DPOConfig plus peftplug's fields."""


@dataclasses.dataclass
class PeftRewardConfig(trl.RewardConfig, peftplug.PeftArguments):
    """RewardConfig plus peftplug's fields."""


@dataclasses.dataclass
class PeftGRPOConfig(trl.GRPOConfig, peftplug.PeftArguments):
    """GRPOConfig plus peftplug's fields."""


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def _text(start: int, length: int) -> str:
    return " ".join(WORDS[(start + i) % 40] for i in range(length))


def _args(config_class: type, tmp_path: Path, **extra: Any) -> Any:
    """Ten logged CPU steps, no checkpoints, LoRA with LoRA+; ``extra`` overrides."""
    common = {"output_dir": str(tmp_path / "out"), "max_steps": 10, "logging_steps": 1}
    common |= {"per_device_train_batch_size": 4, "learning_rate": LR, "seed": 0}
    common |= {"save_strategy": "no", "report_to": [], "use_cpu": True, "bf16": False}
    return config_class(**(common | {"disable_tqdm": True} | PEFT | extra))


def _tiny_scorer(seed: int = 0) -> PreTrainedModel:
    """tiny_llama's architecture with a one-score head, for the reward trainer."""
    config = tiny_llama(seed).config
    config.num_labels = 1
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config).eval()


def _live_models() -> int:
    gc.collect()
    return sum(isinstance(o, PreTrainedModel) for o in gc.get_objects())


def _losses(trainer: Any) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def _check_plugin_groups(trainer: Any) -> None:
    """LoRA+'s groups reach the optimizer: B's learning rate is RATIO times A's."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    lr_of = {}
    for group in trainer.optimizer.param_groups:
        kinds = {"B" if "lora_B" in names[id(p)] else "A" for p in group["params"]}
        if len(kinds) == 1 and all("lora_" in names[id(p)] for p in group["params"]):
            lr_of[kinds.pop()] = group["initial_lr"]
    assert lr_of == {"A": LR, "B": LR * RATIO}


def _check_round_trip(trained: PreTrainedModel, fresh: PreTrainedModel, tmp_path: Path) -> None:
    """The saved adapter, loaded into a fresh base, gives the trained model's logits."""
    peftplug.save_adapter(trained, tmp_path / "adapter")
    loaded = peftplug.load_adapter(fresh, tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 14, 30, 7]])
    with torch.no_grad():
        ours, theirs = trained.eval()(input_ids=ids).logits, loaded.eval()(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def _lora_weights(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_sft_trainer(tmp_path: Path) -> None:
    rows = [{"prompt": _text(i, 4), "completion": _text(i + 4, 3)} for i in range(16)]
    model = tiny_llama()
    trainer = trl.SFTTrainer(
        model=model,
        args=_args(PeftSFTConfig, tmp_path, max_length=16),
        train_dataset=Dataset.from_list(rows),
        processing_class=_tokenizer(),
        **peftplug.trainer_kwargs(trl.SFTTrainer),
    )
    trainer.train()
    losses = _losses(trainer)
    assert len(losses) == 10 and losses[-1] < losses[0]
    _check_plugin_groups(trainer)
    _check_round_trip(trainer.model, tiny_llama(), tmp_path)


def test_dpo_trainer_uses_the_policy_without_adapters_as_its_reference(tmp_path: Path) -> None:
    rows = [
        {"prompt": _text(i, 4), "chosen": _text(i + 4, 3), "rejected": _text(i + 20, 3)}
        for i in range(16)
    ]
    model = tiny_llama()
    args = _args(PeftDPOConfig, tmp_path, max_length=16)
    before = _live_models()
    trainer = trl.DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=_tokenizer(),
        **peftplug.trainer_kwargs(trl.DPOTrainer, model=model, args=args),
    )
    assert _live_models() == before  # TRL neither loaded nor copied a reference model
    assert isinstance(trainer.ref_model, AdaptersDisabled) and trainer.ref_model.policy is model
    assert {id(p) for p in trainer.ref_model.parameters()} <= {id(p) for p in model.parameters()}
    trainer.train()
    losses = _losses(trainer)
    assert len(losses) == 10 and losses[-1] < losses[0]
    _check_plugin_groups(trainer)
    ids = torch.tensor([[1, 5, 9, 14, 30, 7]])
    with torch.no_grad():
        reference = trainer.ref_model(input_ids=ids).logits
        policy = model.eval()(input_ids=ids).logits
        base = tiny_llama()(input_ids=ids).logits
    torch.testing.assert_close(reference, base, rtol=0, atol=1e-6)
    assert not torch.allclose(policy, base, atol=1e-4)
    _check_round_trip(trainer.model, tiny_llama(), tmp_path)


def test_dpo_trainer_kwargs_need_the_model_and_args() -> None:
    with pytest.raises(peftplug.PeftplugError, match="model=model, args=args"):
        peftplug.trainer_kwargs(trl.DPOTrainer)


def test_reward_trainer(tmp_path: Path) -> None:
    rows = [{"chosen": _text(i, 6), "rejected": _text(i + 20, 6)} for i in range(16)]
    model = _tiny_scorer()
    trainer = trl.RewardTrainer(
        model=model,
        args=_args(PeftRewardConfig, tmp_path, max_length=16),
        train_dataset=Dataset.from_list(rows),
        processing_class=_tokenizer(),
        **peftplug.trainer_kwargs(trl.RewardTrainer),
    )
    trainer.train()
    losses = _losses(trainer)
    assert len(losses) == 10 and losses[-1] < losses[0]
    _check_plugin_groups(trainer)
    _check_round_trip(trainer.model, _tiny_scorer(), tmp_path)


def _reward_low_words(completions: list[str], **_: Any) -> list[float]:
    return [float(sum(word in WORDS[:8] for word in text.split())) for text in completions]


def test_grpo_trainer(tmp_path: Path) -> None:
    rows = [{"prompt": _text(i, 4)} for i in range(16)]
    model = tiny_llama()
    args = _args(
        PeftGRPOConfig,
        tmp_path,
        num_generations=4,
        max_completion_length=6,
        per_device_train_batch_size=8,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=_reward_low_words,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=_tokenizer(),
        **peftplug.trainer_kwargs(trl.GRPOTrainer, model=model, args=args),
    )
    initial = _lora_weights(model)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logged) == 10 and len(_losses(trainer)) == 10
    assert any(not torch.equal(initial[n], p) for n, p in _lora_weights(model).items())
    _check_plugin_groups(trainer)
    _check_round_trip(trainer.model, tiny_llama(), tmp_path)
