"""The conformance suite every method plugin runs: subclass, set two attributes, done.

    from peftplug.testing import MethodConformance

    class TestMyMethod(MethodConformance):
        method = "my-method"
        config = {"r": 4}

pytest then checks registration, config parsing, apply/unload, what trains, gradients,
save/load round trips, strict loading into a wrong model, merge/unmerge, optimizer groups
and a short run through the stock Trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
from torch import nn
from transformers import Trainer, TrainingArguments

import peftplug
from peftplug.optim import build_param_groups
from peftplug.plugins import get_host
from peftplug.serialization import method_tensors
from peftplug.state import peft_state
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_llama,
)


class MethodConformance:
    """Behaviour every method must show. Override ``make_model`` for other architectures."""

    method: ClassVar[str]
    config: ClassVar[dict[str, Any]] = {}
    model_kind: ClassVar[Literal["classifier", "causal_lm"]] = "classifier"
    mergeable: ClassVar[bool] = True

    # What a subclass may override -------------------------------------------------------
    def make_model(self, hidden_size: int = 32) -> nn.Module:
        """A fresh tiny base model (the same weights every call)."""
        if self.model_kind == "causal_lm":
            return tiny_llama(hidden_size=hidden_size)
        return tiny_bert_classifier(hidden_size=hidden_size)

    def make_batch(self) -> dict[str, torch.Tensor]:
        """One batch the model accepts, with labels."""
        return causal_lm_batch() if self.model_kind == "causal_lm" else classification_batch()

    # Helpers ----------------------------------------------------------------------------
    def applied_model(self) -> nn.Module:
        """A tiny model with the method applied."""
        return peftplug.apply(self.make_model(), [self.method], {self.method: self.config})

    def outputs(self, model: nn.Module) -> torch.Tensor:
        """The logits on the fixed batch, in eval mode, without labels."""
        model.eval()
        batch = {k: v for k, v in self.make_batch().items() if k != "labels"}
        with torch.no_grad():
            return model(**batch).logits

    def trained_model(self, steps: int = 3) -> nn.Module:
        """An applied model after a few real SGD steps, so its adapter is non-trivial."""
        model = self.applied_model()
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        for _ in range(steps):
            optimizer.zero_grad()
            model(**self.make_batch()).loss.backward()
            optimizer.step()
        return model.eval()

    # The suite --------------------------------------------------------------------------
    def test_method_is_registered(self) -> None:
        host = get_host()
        host.manager.check_pending()
        spec = host.method(self.method)
        assert spec.distribution and spec.version
        assert host.plugins[spec.plugin].error is None

    def test_config_round_trips_and_refuses_unknown_options(self) -> None:
        spec = get_host().method(self.method)
        config = spec.parse_config(self.config)
        assert spec.parse_config(config.to_dict()) == config
        with pytest.raises(peftplug.ConfigError, match="no_such_option"):
            spec.parse_config({**self.config, "no_such_option": 1})

    def test_everything_that_trains_is_saved(self) -> None:
        model = self.applied_model()
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable, "the method made nothing trainable"
        saved = set(method_tensors(model, peft_state(model)))
        assert trainable <= saved, f"trainable but not saved: {sorted(trainable - saved)[:5]}"
        report = peftplug.trainable_parameters(model)
        assert report.trainable == sum(
            p.numel() for p in model.parameters() if p.requires_grad
        )

    def test_gradients_reach_only_trainable_parameters(self) -> None:
        model = self.applied_model().train()
        model(**self.make_batch()).loss.backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert with_grad == trainable

    def test_training_changes_the_output(self) -> None:
        assert not torch.allclose(self.outputs(self.trained_model()), self.outputs(self.make_model()))

    def test_unload_restores_the_base_model(self) -> None:
        base = self.make_model()
        flags = {n: p.requires_grad for n, p in base.named_parameters()}
        expected = self.outputs(base)
        model = peftplug.unload(self.applied_model())
        assert peft_state(model) is None
        assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
        torch.testing.assert_close(self.outputs(model), expected)

    def test_save_load_round_trip_is_exact(self, tmp_path: Path) -> None:
        trained = self.trained_model()
        peftplug.save_adapter(trained, tmp_path / "adapter")
        loaded = peftplug.load_adapter(self.make_model(), tmp_path / "adapter")
        torch.testing.assert_close(self.outputs(loaded), self.outputs(trained), rtol=0, atol=0)
        saved_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
        frozen = sum(p.numel() for p in trained.parameters() if not p.requires_grad)
        assert saved_bytes < 4 * frozen, "the adapter file holds frozen base weights"

    def test_loading_into_a_different_model_fails_and_changes_nothing(self, tmp_path: Path) -> None:
        peftplug.save_adapter(self.trained_model(), tmp_path / "adapter")
        other = self.make_model(hidden_size=48)
        before = {k: v.clone() for k, v in other.state_dict().items()}
        with pytest.raises(peftplug.AdapterLoadError):
            peftplug.load_adapter(other, tmp_path / "adapter")
        assert peft_state(other) is None
        after = other.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)

    def test_merge_and_unmerge(self) -> None:
        model = self.trained_model()
        unmerged = self.outputs(model)
        if not self.mergeable:
            with pytest.raises(peftplug.NotMergeableError):
                peftplug.merge(model)
            return
        peftplug.merge(model)
        torch.testing.assert_close(self.outputs(model), unmerged, rtol=1e-4, atol=1e-5)
        peftplug.unmerge(model)
        torch.testing.assert_close(self.outputs(model), unmerged, rtol=1e-4, atol=1e-5)

    def test_param_groups_hold_each_trainable_parameter_once(self) -> None:
        model = self.applied_model()
        groups = build_param_groups(model, TrainingArguments(output_dir="unused", report_to=[]))
        grouped = [id(p) for group in groups for p in group["params"]]
        assert len(grouped) == len(set(grouped))
        assert set(grouped) == {id(p) for p in model.parameters() if p.requires_grad}

    def test_trains_through_the_stock_trainer(self, tmp_path: Path) -> None:
        model = self.make_model()
        batch = self.make_batch()
        rows = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["input_ids"]))]
        args = peftplug.PeftArguments(
            output_dir=str(tmp_path),
            peft_plugins=[self.method],
            peft_config={self.method: self.config},
            max_steps=3,
            per_device_train_batch_size=2,
            learning_rate=1e-2,
            save_steps=3,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, **peftplug.trainer_kwargs())
        result = trainer.train()
        assert torch.isfinite(torch.tensor(result.training_loss))
        checkpoint = peftplug.load_adapter(self.make_model(), tmp_path / "checkpoint-3")
        torch.testing.assert_close(self.outputs(checkpoint), self.outputs(trainer.model))
