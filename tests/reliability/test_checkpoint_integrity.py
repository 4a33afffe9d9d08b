"""A damaged Trainer checkpoint is refused on resume and on load, naming the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch
from transformers import Trainer

import peftplug
from peftplug.checkpoint_manifest import MANIFEST
from peftplug.testing.tiny_models import classification_batch, tiny_bert_classifier


def rows() -> list[dict[str, torch.Tensor]]:
    batch = classification_batch(batch=8)
    return [{k: v[i] for k, v in batch.items()} for i in range(8)]


def trainer(output_dir: Path, max_steps: int) -> Trainer:
    args = peftplug.PeftArguments(
        output_dir=str(output_dir),
        peft_plugins=["lora"],
        peft_config={"lora": {"r": 2}},
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_steps=max_steps,
        save_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return Trainer(
        model=tiny_bert_classifier(), args=args, train_dataset=rows(), **peftplug.trainer_kwargs()
    )


def flip_last_byte(weights: Path) -> None:
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))


def write_nan(weights: Path) -> None:
    tensors = safetensors.torch.load_file(weights)
    first = sorted(tensors)[0]
    tensors[first].view(-1)[0] = float("nan")
    safetensors.torch.save_file(tensors, weights, metadata={"format": "pt"})


def drop_a_tensor(weights: Path) -> None:
    tensors = safetensors.torch.load_file(weights)
    del tensors[sorted(tensors)[0]]
    safetensors.torch.save_file(tensors, weights, metadata={"format": "pt"})


DAMAGES: dict[str, Callable[[Path], None]] = {
    "flipped byte": flip_last_byte,
    "nan": write_nan,
    "missing tensor": drop_a_tensor,
}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    trainer(tmp_path, max_steps=2).train()
    assert (tmp_path / "checkpoint-2" / MANIFEST).is_file()
    return tmp_path / "checkpoint-2"


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_refused_on_resume_naming_the_file(
    checkpoint: Path, damage: str
) -> None:
    DAMAGES[damage](checkpoint / "model.safetensors")
    resumed = trainer(checkpoint.parent, max_steps=4)
    with pytest.raises(peftplug.PeftplugError, match=r"model\.safetensors.*earlier checkpoint"):
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 2  # no step was taken from the damaged state


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_refused_by_load_adapter(checkpoint: Path, damage: str) -> None:
    DAMAGES[damage](checkpoint / "model.safetensors")
    with pytest.raises(peftplug.AdapterLoadError, match=r"model\.safetensors"):
        peftplug.load_adapter(tiny_bert_classifier(), checkpoint)


def test_an_intact_checkpoint_resumes(checkpoint: Path) -> None:
    resumed = trainer(checkpoint.parent, max_steps=4)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4
    assert (checkpoint.parent / "checkpoint-4" / MANIFEST).is_file()
