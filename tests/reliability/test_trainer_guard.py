"""PeftArguments given to a Trainer without peftplug's kwargs: refused before the first step."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments

import peftplug
from peftplug.state import peft_state
from peftplug.testing.tiny_models import classification_batch, tiny_bert_classifier


def _args(tmp_path: Path, cls: type = peftplug.PeftArguments, **overrides) -> TrainingArguments:
    options = dict(
        output_dir=str(tmp_path),
        peft_plugins=["lora"],
        max_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        per_device_train_batch_size=4,
    )
    return cls(**{**options, **overrides})


def _rows() -> list[dict[str, torch.Tensor]]:
    batch = classification_batch(batch=8)
    return [{k: v[i] for k, v in batch.items()} for i in range(8)]


def test_a_trainer_without_trainer_kwargs_refuses_before_any_step(tmp_path: Path) -> None:
    model = tiny_bert_classifier()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=_rows())
    with pytest.raises(peftplug.PeftplugError) as caught:
        trainer.train()
    assert str(caught.value) == (
        "PeftArguments(peft_plugins=['lora']) needs peftplug's callback and optimizer factory, "
        "which this Trainer lacks, so it would train the whole model: "
        "build it as Trainer(..., **peftplug.trainer_kwargs())"
    )
    assert trainer.state.global_step == 0 and peft_state(model) is None
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_the_guard_stays_quiet_with_trainer_kwargs(tmp_path: Path) -> None:
    args = _args(tmp_path, warmup_steps=1)
    Trainer(model=tiny_bert_classifier(), args=args, **peftplug.trainer_kwargs())
    assert args.get_warmup_steps(10) == 1


def test_the_guard_stays_quiet_without_peft_plugins(tmp_path: Path) -> None:
    model = peftplug.apply(tiny_bert_classifier(), "lora")
    args = _args(tmp_path, peft_plugins=[])
    Trainer(model=model, args=args, train_dataset=_rows()).train()  # the user's own choice
    assert args.get_warmup_steps(10) == 0


@dataclasses.dataclass
class _OtherConfig(TrainingArguments):
    """Stands in for a TrainingArguments subclass such as TRL's SFTConfig."""

    max_length: int = 8


@dataclasses.dataclass
class _Combined(peftplug.PeftArguments, _OtherConfig):
    pass


def test_the_guard_is_no_argument_and_survives_subclassing(tmp_path: Path) -> None:
    assert "_callback_attached" not in {f.name for f in dataclasses.fields(_Combined)}
    assert "_callback_attached" not in _args(tmp_path).to_dict()
    with pytest.raises(peftplug.PeftplugError, match="trainer_kwargs"):
        _args(tmp_path, cls=_Combined).get_warmup_steps(10)
    args = _args(tmp_path, cls=_Combined)
    Trainer(model=tiny_bert_classifier(), args=args, **peftplug.trainer_kwargs())
    assert args.get_warmup_steps(10) == 0
