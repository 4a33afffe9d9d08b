"""The conformance suite every method plugin runs: subclass, set two attributes, done.

    from peftplug.testing import MethodConformance

    class TestMyMethod(MethodConformance):
        method = "my-method"
        config = {"r": 4}

pytest then checks registration and config parsing; that the method trains only its own
tensors, saves all of them and moves them with the model (dtype and device); that a fresh
adapter starts at the base (where the method declares ``starts_at_base``); that disabling,
unloading, merging and unmerging give the base model back, its weights included; that a second
named adapter switches and survives deleting the first; exact save/load round trips in fp32 and
bf16; strict loading; optimizer groups; and a short run through the stock Trainer.

The tiny models have non-zero biases and non-trivial norms, so a method that drops a bias or
ignores a norm changes the outputs. What a method declares on its ``MethodSpec``
(``starts_at_base``, ``trains_in_place``) decides which checks apply. A method over a lossy base
(NF4) sets ``lossy_base = True`` and returns the rounded base from ``reference_base``: outputs
are then compared with it at fp32 tolerance, and its packed weights are not compared after a
requantizing unmerge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
from torch import nn
from transformers import Trainer, TrainingArguments

import peftplug
from peftplug.contracts import MethodSpec
from peftplug.optim import build_param_groups
from peftplug.plugins import get_host
from peftplug.serialization import method_tensors
from peftplug.state import peft_state
from peftplug.testing.float_bounds import gamma
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_llama,
)

# fp32 logits of a merged and an unmerged model: the same sums in another order
MERGE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


class MethodConformance:
    """Behaviour every method must show. Override ``make_model`` for other architectures."""

    method: ClassVar[str]
    config: ClassVar[dict[str, Any]] = {}
    model_kind: ClassVar[Literal["classifier", "causal_lm"]] = "classifier"
    mergeable: ClassVar[bool] = True
    lossy_base: ClassVar[bool] = False

    # What a subclass may override -------------------------------------------------------
    def make_model(self, hidden_size: int = 32) -> nn.Module:
        """A fresh tiny base model (the same weights every call)."""
        if self.model_kind == "causal_lm":
            return tiny_llama(hidden_size=hidden_size)
        return tiny_bert_classifier(hidden_size=hidden_size)

    def reference_base(self) -> nn.Module:
        """The base the method's outputs start from; a lossy base returns its rounded weights."""
        return self.make_model()

    def make_batch(self) -> dict[str, torch.Tensor]:
        """One batch the model accepts, with labels."""
        return causal_lm_batch() if self.model_kind == "causal_lm" else classification_batch()

    # Helpers ----------------------------------------------------------------------------
    @property
    def spec(self) -> MethodSpec:
        return get_host().method(self.method)

    def applied_model(
        self, adapter_name: str = "default", model: nn.Module | None = None
    ) -> nn.Module:
        """A tiny model (or ``model``) with the method applied under ``adapter_name``."""
        model = self.make_model() if model is None else model
        config = {self.method: self.config}
        return peftplug.apply(model, [self.method], config, adapter_name=adapter_name)

    def outputs(self, model: nn.Module) -> torch.Tensor:
        """The logits on the fixed batch, in eval mode, without labels."""
        model.eval()
        batch = {k: v for k, v in self.make_batch().items() if k != "labels"}
        with torch.no_grad():
            return model(**batch).logits

    def train(self, model: nn.Module, steps: int = 3) -> nn.Module:
        """A few real SGD steps on what trains, so the active adapter is non-trivial."""
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        for _ in range(steps):
            optimizer.zero_grad()
            model(**self.make_batch()).loss.backward()
            optimizer.step()
        return model.eval()

    def trained_model(self, steps: int = 3) -> nn.Module:
        """An applied model after a few training steps."""
        return self.train(self.applied_model(), steps)

    def assert_base_outputs(self, got: torch.Tensor) -> None:
        """``got`` equals the base model's logits (a lossy base's: the same sums, reordered)."""
        expected = self.outputs(self.reference_base())
        tolerance = MERGE_TOLERANCE if self.lossy_base else {"rtol": 0, "atol": 0}
        torch.testing.assert_close(got, expected, **tolerance)

    def applied_base(self) -> tuple[nn.Module, set[int]]:
        """An applied tiny model and the ids of the base model's own parameters."""
        base = self.make_model()
        own = {id(p) for p in base.parameters()}
        return self.applied_model(model=base), own

    @staticmethod
    def trained_in_place(model: nn.Module, own: set[int]) -> set[int]:
        """Ids of the base's own parameters (``own``) that train in the applied ``model``."""
        return {id(p) for p in model.parameters() if p.requires_grad and id(p) in own}

    # The suite --------------------------------------------------------------------------
    def test_method_is_registered(self) -> None:
        host = get_host()
        host.manager.check_pending()
        spec = self.spec
        assert spec.distribution and spec.version
        assert host.plugins[spec.plugin].error is None

    def test_config_round_trips_and_refuses_unknown_options(self) -> None:
        config = self.spec.parse_config(self.config)
        assert self.spec.parse_config(config.to_dict()) == config
        with pytest.raises(peftplug.ConfigError, match="no_such_option"):
            self.spec.parse_config({**self.config, "no_such_option": 1})

    def test_everything_that_trains_is_saved(self) -> None:
        model = self.applied_model()
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable, "the method made nothing trainable"
        saved = set(method_tensors(model, peft_state(model)))
        assert trainable <= saved, f"trainable but not saved: {sorted(trainable - saved)[:5]}"
        report = peftplug.trainable_parameters(model)
        assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)

    def test_base_parameters_train_only_if_the_method_declares_it(self) -> None:
        model, own = self.applied_base()
        in_place = self.trained_in_place(model, own)
        assert bool(in_place) == self.spec.trains_in_place, (
            f"{len(in_place)} base parameters train in place, but the method declares "
            f"trains_in_place={self.spec.trains_in_place}"
        )

    def test_gradients_reach_only_trainable_parameters(self) -> None:
        model = self.applied_model().train()
        model(**self.make_batch()).loss.backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert with_grad == trainable
        zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
        assert len(zero) < len(trainable), "no trainable parameter received a gradient"

    def test_training_leaves_the_rest_of_the_base_untouched(self) -> None:
        base = self.make_model()
        originals = base.state_dict(keep_vars=True)
        fresh = self.make_model().state_dict()
        own = {id(p) for p in base.parameters()}
        model = self.train(self.applied_model(model=base))
        in_place = self.trained_in_place(model, own) if self.spec.trains_in_place else set()
        changed = [
            name
            for name, tensor in originals.items()
            if id(tensor) not in in_place and not torch.equal(tensor.detach(), fresh[name])
        ]
        assert not changed, f"training changed base tensors it does not train: {changed[:5]}"

    def test_training_changes_the_output(self) -> None:
        assert not torch.allclose(
            self.outputs(self.trained_model()), self.outputs(self.make_model())
        )

    def test_a_fresh_adapter_starts_at_the_base(self) -> None:
        if not self.spec.starts_at_base:
            pytest.skip(f"{self.method!r} does not declare starts_at_base")
        model = self.applied_model()
        self.assert_base_outputs(self.outputs(model))

    def test_disabled_adapters_give_the_base_outputs(self) -> None:
        if self.spec.trains_in_place:
            pytest.skip(f"{self.method!r} trains base parameters in place: nothing to disable")
        model = self.trained_model()
        trained = self.outputs(model)
        with peftplug.disable_adapters(model):
            self.assert_base_outputs(self.outputs(model))
        torch.testing.assert_close(self.outputs(model), trained, rtol=0, atol=0)

    def test_unload_restores_the_base_model_and_its_weights(self) -> None:
        base = self.make_model()
        expected = self.reference_base().state_dict()
        flags = {n: p.requires_grad for n, p in base.named_parameters()}
        hooks = _hook_counts(base)
        own = {id(p) for p in base.parameters()}
        model = self.train(self.applied_model(model=base))
        kept = {
            n for n, p in model.named_parameters() if id(p) in self.trained_in_place(model, own)
        }
        peftplug.unload(model)
        assert peft_state(model) is None
        assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
        assert _hook_counts(model) == hooks, "unload left hooks behind"
        after = model.state_dict()
        assert after.keys() == expected.keys()
        for name in expected.keys() - {n.replace(".base_layer", "") for n in kept}:
            torch.testing.assert_close(after[name], expected[name], rtol=0, atol=0, msg=name)
        if not kept:
            self.assert_base_outputs(self.outputs(model))

    def test_merge_and_unmerge_restore_outputs_and_base_weights(self) -> None:
        model = self.trained_model()
        unmerged = self.outputs(model)
        if not self.mergeable:
            with pytest.raises(peftplug.NotMergeableError):
                peftplug.merge(model)
            return
        own = {id(t) for t in method_tensors(model, peft_state(model)).values()}
        base = {n: t for n, t in model.state_dict(keep_vars=True).items() if id(t) not in own}
        before = {n: t.detach().clone() for n, t in base.items()}
        peftplug.merge(model)
        merged = {n: t.detach().clone() for n, t in base.items()}
        exact_merge = not self.lossy_base  # a lossy base rounds the merged weights again
        if exact_merge:
            torch.testing.assert_close(self.outputs(model), unmerged, **MERGE_TOLERANCE)
        if exact_merge and not self.spec.trains_in_place:
            base_outputs = self.outputs(self.reference_base())
            with peftplug.disable_adapters(model):  # unmerges: the base weights, to rounding
                torch.testing.assert_close(self.outputs(model), base_outputs, **MERGE_TOLERANCE)
        peftplug.unmerge(model)
        if exact_merge:
            torch.testing.assert_close(self.outputs(model), unmerged, **MERGE_TOLERANCE)
        for name, tensor in base.items():
            if self.lossy_base and not isinstance(tensor, nn.Parameter):
                continue  # the lossy format's own buffers (packed codes, scales) are rewritten
            if not tensor.is_floating_point():
                assert torch.equal(tensor, before[name]), name
                continue
            bound = gamma(2, tensor.dtype) * (before[name].abs() + merged[name].abs())
            error = (tensor.detach() - before[name]).abs()
            assert bool((error <= bound).all()), (
                f"unmerge left {name} changed by up to {error.max().item():.3g}"
            )

    def test_a_second_adapter_switches_and_survives_deleting_the_first(self) -> None:
        model = self.trained_model()
        first = self.outputs(model)
        if self.spec.trains_in_place:
            with pytest.raises(peftplug.ConfigError):
                self.applied_model("second", model)
            torch.testing.assert_close(self.outputs(model), first, rtol=0, atol=0)
            return
        self.train_second_adapter(model)
        second = self.outputs(model)
        assert not torch.equal(second, first), "the second adapter's outputs equal the first's"
        peftplug.set_active_adapter(model, "default")
        torch.testing.assert_close(self.outputs(model), first, rtol=0, atol=0)
        peftplug.delete_adapter(model, "default")
        assert peft_state(model).adapter_names == ["second"]
        torch.testing.assert_close(self.outputs(model), second, rtol=0, atol=0)

    def test_deleting_the_second_adapter_keeps_the_first(self) -> None:
        if self.spec.trains_in_place:
            pytest.skip(f"{self.method!r} trains in place: a model holds one such adapter")
        model = self.trained_model()
        first = self.outputs(model)
        sizes = {n: p.shape for n, p in model.named_parameters()}
        hooks = _hook_counts(model)
        self.train_second_adapter(model)
        peftplug.delete_adapter(model, "second")
        assert peft_state(model).active_adapter == "default"
        assert {n: p.shape for n, p in model.named_parameters()} == sizes, "deleting left tensors"
        assert _hook_counts(model) == hooks, "deleting left hooks behind"
        torch.testing.assert_close(self.outputs(model), first, rtol=0, atol=0)
        self.train(model)
        assert not torch.equal(self.outputs(model), first), "the first adapter no longer trains"

    def train_second_adapter(self, model: nn.Module) -> None:
        """Add adapter ``second`` (outputs stay the first's), make it active and train it.

        One step, not three: a deterministic method started from the same copy (a head) would
        otherwise end where the first adapter did.
        """
        first = self.outputs(model)
        first_tensors = {
            k: t.detach().clone() for k, t in method_tensors(model, peft_state(model)).items()
        }
        self.applied_model("second", model)
        torch.testing.assert_close(self.outputs(model), first, rtol=0, atol=0)
        peftplug.set_active_adapter(model, "second")
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        second = set(method_tensors(model, peft_state(model), "second"))
        assert trainable <= second, (
            f"trains beside the active adapter: {sorted(trainable - second)[:5]}"
        )
        self.train(model, steps=1)
        after = method_tensors(model, peft_state(model), "default")
        assert all(torch.equal(after[k], first_tensors[k]) for k in after), (
            "training the second adapter changed the first"
        )

    def test_dtype_and_device_moves_carry_all_method_state(self) -> None:
        model = self.trained_model()
        expected = self.outputs(model)
        model.to(torch.float64)
        tensors = method_tensors(model, peft_state(model))
        stale = [
            k for k, t in tensors.items() if t.is_floating_point() and t.dtype != torch.float64
        ]
        assert not stale, f"not moved to float64: {stale[:5]}"
        torch.testing.assert_close(self.outputs(model).float(), expected, **MERGE_TOLERANCE)
        model.to("meta")
        left = [k for k, t in method_tensors(model, peft_state(model)).items() if not t.is_meta]
        assert not left, f"not moved to the meta device: {left[:5]}"

    def test_save_load_round_trip_is_exact(self, tmp_path: Path) -> None:
        trained = self.trained_model()
        peftplug.save_adapter(trained, tmp_path / "adapter")
        loaded = peftplug.load_adapter(self.make_model(), tmp_path / "adapter")
        torch.testing.assert_close(self.outputs(loaded), self.outputs(trained), rtol=0, atol=0)
        saved_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
        frozen = sum(p.numel() for p in trained.parameters() if not p.requires_grad)
        assert saved_bytes < 4 * frozen, "the adapter file holds frozen base weights"

    def test_save_load_round_trip_in_bf16_is_exact(self, tmp_path: Path) -> None:
        trained = self.train(self.applied_model(model=self.make_model().to(torch.bfloat16)))
        peftplug.save_adapter(trained, tmp_path / "adapter")
        loaded = peftplug.load_adapter(self.make_model().to(torch.bfloat16), tmp_path / "adapter")
        torch.testing.assert_close(self.outputs(loaded), self.outputs(trained), rtol=0, atol=0)

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


def _hook_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Forward and forward-pre hooks per module (by type and position, not by path)."""
    return {
        f"{index}:{type(module).__name__}": (
            len(module._forward_hooks),
            len(module._forward_pre_hooks),
        )
        for index, module in enumerate(model.modules())
        if module._forward_hooks or module._forward_pre_hooks
    }
