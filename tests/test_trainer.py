"""The stock Trainer, patched by a callback and an optimizer factory: no subclass."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments

import peftplug
from peftplug.state import peft_state
from peftplug.testing.tiny_models import classification_batch, tiny_bert_classifier, tiny_llama


def _rows(batch: dict[str, torch.Tensor], repeat: int = 4) -> list[dict[str, torch.Tensor]]:
    size = len(batch["input_ids"])
    return [{k: v[i] for k, v in batch.items()} for _ in range(repeat) for i in range(size)]


def _args(tmp_path: Path, **overrides) -> peftplug.PeftArguments:
    options = dict(
        output_dir=str(tmp_path),
        peft_plugins=["lora"],
        peft_config={"lora": {"r": 4}},
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_steps=6,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )
    options.update(overrides)
    return peftplug.PeftArguments(**options)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_arguments_parse_from_a_command_line() -> None:
    (args,) = HfArgumentParser(peftplug.PeftArguments).parse_args_into_dataclasses(
        ["--output_dir", "out", "--peft_plugins", "lora", "--peft_config", '{"lora": {"r": 16}}']
    )
    assert args.peft_plugins == ["lora"] and args.peft_config == {"lora": {"r": 16}}


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"peft_plugins": ["lorra"]}, peftplug.PluginNotFoundError, "did you mean 'lora'"),
        ({"peft_config": "{r: 8}"}, peftplug.ConfigError, "not valid JSON"),
        ({"peft_config": {"lora": {"rank": 8}}}, peftplug.ConfigError, "unknown 'lora' option"),
        ({"peft_config": {"bitfit": {}}}, peftplug.ConfigError, "not in peft_plugins"),
    ],
)
def test_bad_arguments_fail_when_the_args_are_made(
    tmp_path: Path, overrides: dict, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        _args(tmp_path, **overrides)


def test_checkpoints_hold_only_adapter_tensors_and_resume_exactly(tmp_path: Path) -> None:
    rows = _rows(classification_batch(batch=8))
    straight = Trainer(
        model=tiny_bert_classifier(), args=_args(tmp_path, save_steps=3), train_dataset=rows,
        **peftplug.trainer_kwargs(),
    )
    straight.train()
    checkpoint = tmp_path / "checkpoint-3"
    saved = safetensors.torch.load_file(checkpoint / "model.safetensors")
    trainable = {n for n, p in straight.model.named_parameters() if p.requires_grad}
    assert set(saved) == trainable
    resumed = Trainer(
        model=tiny_bert_classifier(), args=_args(tmp_path / "resumed", save_steps=3),
        train_dataset=rows, **peftplug.trainer_kwargs(),
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    expected, got = _trainable_state(straight.model), _trainable_state(resumed.model)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_load_best_model_at_end_restores_the_best_adapter(tmp_path: Path) -> None:
    rows = _rows(classification_batch(batch=8))
    trainer = Trainer(
        model=tiny_bert_classifier(),
        args=_args(
            tmp_path, eval_strategy="steps", eval_steps=2, save_steps=2, max_steps=6,
            load_best_model_at_end=True, metric_for_best_model="loss",
        ),
        train_dataset=rows,
        eval_dataset=rows[:8],
        **peftplug.trainer_kwargs(),
    )
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    saved = safetensors.torch.load_file(best / "model.safetensors")
    live = dict(trainer.model.named_parameters())
    for name, tensor in saved.items():
        torch.testing.assert_close(live[name].detach(), tensor, rtol=0, atol=0)
    assert peft_state(trainer.model) is not None


def test_model_init_models_are_patched(tmp_path: Path) -> None:
    trainer = Trainer(
        model_init=lambda: tiny_bert_classifier(), args=_args(tmp_path),
        train_dataset=_rows(classification_batch()),
        **peftplug.trainer_kwargs(),
    )
    trainer.train()
    assert peft_state(trainer.model) is not None
    report = peftplug.trainable_parameters(trainer.model)
    assert 0 < report.trainable < report.total / 2


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_with_a_frozen_base(tmp_path: Path, reentrant: bool) -> None:
    model = tiny_llama()
    batch = {"input_ids": torch.randint(1, 128, (8, 10))}
    batch["labels"] = batch["input_ids"]
    args = _args(
        tmp_path, gradient_checkpointing=True, peft_config={"lora": {"r": 4}},
        gradient_checkpointing_kwargs={"use_reentrant": reentrant},
    )
    before = {n: p.clone() for n, p in model.named_parameters() if "q_proj" in n}
    trainer = Trainer(model=model, args=args, train_dataset=_rows(batch, 1), **peftplug.trainer_kwargs())
    trainer.train()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "LoRA B never received a gradient"
    for name, value in before.items():
        assert torch.equal(dict(model.named_parameters())[name.replace("q_proj.", "q_proj.base_layer.")], value)


def test_a_model_applied_by_hand_trains_with_plain_training_arguments(tmp_path: Path) -> None:
    model = peftplug.apply(tiny_bert_classifier(), "lora")
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, report_to=[], use_cpu=True, disable_tqdm=True
    )
    Trainer(model=model, args=args, train_dataset=_rows(classification_batch()), **peftplug.trainer_kwargs()).train()


def test_plain_arguments_and_a_plain_model_explain_what_is_missing(tmp_path: Path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(peftplug.PeftplugError, match="PeftArguments"):
        Trainer(model=tiny_bert_classifier(), args=args, **peftplug.trainer_kwargs())


def test_method_callbacks_receive_trainer_events(tmp_path: Path) -> None:
    events: list[str] = []

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            events.append(f"step {state.global_step}")

    class CallbackPlugin:
        @peftplug.hookimpl
        def peftplug_trainer_callbacks(self, config):
            return [Recorder()] if config.method == "lora" else None

    from peftplug.plugins import get_host

    plugin = CallbackPlugin()
    get_host().manager.register(plugin, name="callback-test")
    try:
        Trainer(
            model=tiny_bert_classifier(), args=_args(tmp_path, max_steps=2),
            train_dataset=_rows(classification_batch()), **peftplug.trainer_kwargs(),
        ).train()
    finally:
        get_host().manager.unregister(plugin)
    assert events == ["step 1", "step 2"]


def test_optimizer_honours_args_optim(tmp_path: Path) -> None:
    trainer = Trainer(
        model=tiny_bert_classifier(), args=_args(tmp_path, optim="sgd", weight_decay=0.1),
        train_dataset=_rows(classification_batch()), **peftplug.trainer_kwargs(),
    )
    trainer.create_optimizer()
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    decays = {group["weight_decay"] for group in trainer.optimizer.param_groups}
    assert decays == {0.1, 0.0}  # no decay on the head's bias
