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


def kill_the_save_at_step(monkeypatch: pytest.MonkeyPatch, step: int, method: str) -> None:
    """Interrupt the Trainer's checkpoint save of ``step`` inside ``method`` (after the model)."""
    original = getattr(Trainer, method)

    def interrupted(self: Trainer, *args: object, **kwargs: object) -> object:
        if self.state.global_step == step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, method, interrupted)


@pytest.mark.parametrize("cut_in", ["_save_optimizer_and_scheduler", "_save_rng_state"])
def test_a_save_cut_off_is_set_aside_and_true_resumes_from_the_last_complete_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, cut_in: str
) -> None:
    with monkeypatch.context() as patch:
        kill_the_save_at_step(patch, 4, cut_in)
        with pytest.raises(KeyboardInterrupt):
            trainer(tmp_path, max_steps=6).train()
    assert (tmp_path / "checkpoint-4" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoint-4" / "trainer_state.json").exists()
    resumed = trainer(tmp_path, max_steps=6)  # building it sets the cut-off save aside
    assert "checkpoint-4 was cut off while saving (it has no trainer_state.json)" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "incomplete-checkpoint-4"]
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    assert (tmp_path / "checkpoint-6" / MANIFEST).is_file()


def test_a_checkpoint_cut_off_before_its_manifest_is_set_aside(
    checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer(checkpoint.parent, max_steps=4).train(resume_from_checkpoint=True)
    (checkpoint.parent / "checkpoint-4" / MANIFEST).unlink()  # killed just before our callback
    trainer(checkpoint.parent, max_steps=4)
    assert f"no {MANIFEST}, which the earlier checkpoints have" in caplog.text
    assert (checkpoint.parent / "incomplete-checkpoint-4").is_dir()
    assert (checkpoint / MANIFEST).is_file()


def test_checkpoints_written_without_peftplug_are_left_alone(checkpoint: Path) -> None:
    for path in (checkpoint, checkpoint.parent / "checkpoint-1"):
        path.mkdir(exist_ok=True)
        (path / MANIFEST).unlink(missing_ok=True)
        (path / "trainer_state.json").write_text("{}")
    trainer(checkpoint.parent, max_steps=4)
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["checkpoint-1", "checkpoint-2"]
