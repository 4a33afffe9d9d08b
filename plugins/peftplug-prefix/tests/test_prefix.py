"""Prefix tuning on tiny BERT, Llama (GQA) and GPT-2 models against independent oracles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PrefixTuningConfig, get_peft_model
from peftplug_prefix import PrefixEncoder, PrefixKeyValues, fold, prefix_store
from peftplug_prefix.peft_equivalent import peft_prefix_table
from peftplug_prefix.testing import show_peft_the_cache_parameter
from torch import nn
from transformers import Trainer, TrainingArguments

import peftplug
from peftplug.optim import build_param_groups
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)

TOKENS, WIDTH = 4, 16
MODELS = {"llama": tiny_llama, "bert": tiny_bert_classifier, "gpt2": tiny_gpt2}


def _inputs(model: nn.Module) -> dict[str, torch.Tensor]:
    batch = classification_batch() if hasattr(model, "classifier") else causal_lm_batch()
    batch.pop("labels")
    return batch


def _logits(model: nn.Module, **extra: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**_inputs(model), **extra).logits


def _shifted_positions(model: nn.Module) -> torch.Tensor:
    """Positions P .. P+L-1: where the real tokens sit when the prefix came first."""
    input_ids = _inputs(model)["input_ids"]
    return torch.arange(TOKENS, TOKENS + input_ids.shape[1]).expand(input_ids.shape[0], -1)


def _applied(build, **options) -> nn.Module:
    return peftplug.apply(build(), "prefix", {"prefix": {"num_virtual_tokens": TOKENS, **options}})


def _trained(build, steps: int = 5, **options) -> nn.Module:
    model = _applied(build, **options)
    batch = classification_batch() if hasattr(model, "classifier") else causal_lm_batch()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model.train()(**batch).loss.backward()
        optimizer.step()
    return model.eval()


def _kv_shape(model: nn.Module) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) read from the model config."""
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def _head_count(model: nn.Module) -> int:
    if not hasattr(model, "classifier"):
        return 0
    return sum(p.numel() for p in model.classifier.modules_to_save["default"].parameters())


@pytest.mark.parametrize("name", list(MODELS))
def test_a_folded_prefix_stores_two_x_layers_x_tokens_x_kv_heads_x_head_dim(name: str) -> None:
    model = _trained(MODELS[name], steps=1)
    layers, kv_heads, head_dim = _kv_shape(model)
    fold(model)
    expected = 2 * layers * TOKENS * kv_heads * head_dim + _head_count(model)
    assert peftplug.trainable_parameters(model).trainable == expected


def test_the_mlp_has_an_embedding_a_trunk_and_per_layer_heads() -> None:
    model = _applied(tiny_llama, encoder_hidden_size=WIDTH)
    layers, kv_heads, head_dim = _kv_shape(model)
    hidden = model.config.hidden_size
    outputs = layers * kv_heads * head_dim
    expected = TOKENS * hidden + (hidden * WIDTH + WIDTH) + 2 * (WIDTH * outputs + outputs)
    assert peftplug.trainable_parameters(model).trainable == expected


@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize("projection", [True, False])
def test_the_prefix_starts_as_if_the_model_had_read_real_tokens(
    name: str, projection: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefixed(x at positions P..) equals the base model's logits on [tokens; x] for x."""
    ids = [5, 17, 3, 99]
    monkeypatch.setattr("peftplug_prefix.init.initial_token_ids", lambda *args: ids)
    model = _applied(MODELS[name], projection=projection)
    input_ids = _inputs(model)["input_ids"]
    together = torch.cat([torch.tensor([ids]).expand(len(input_ids), -1), input_ids], dim=1)
    with torch.no_grad():
        expected = MODELS[name]()(input_ids=together).logits[:, TOKENS:]
    prefixed = _logits(model, position_ids=_shifted_positions(model))
    torch.testing.assert_close(prefixed, expected, rtol=1e-3, atol=5e-4)  # fp32 least squares


@pytest.mark.parametrize(("name", "task"), [("llama", "CAUSAL_LM"), ("bert", "SEQ_CLS")])
def test_the_same_prefix_in_hf_peft_gives_the_same_logits(name: str, task: str) -> None:
    """HF PEFT puts the prefix into the KV cache, which shifts positions by P: so do we here."""
    ours = _trained(MODELS[name], projection=False, init="random")
    prefix = prefix_store(ours).prefixes["default"]
    peft = get_peft_model(MODELS[name](), PrefixTuningConfig(task_type=task, num_virtual_tokens=TOKENS))
    if task == "SEQ_CLS":
        show_peft_the_cache_parameter(peft.base_model.get_submodule(peft.transformer_backbone_name))
    table = peft_prefix_table(prefix.key, prefix.value)
    with torch.no_grad():
        peft.prompt_encoder["default"].embedding.weight.copy_(table)
        if name == "bert":
            head = peft.base_model.classifier.modules_to_save["default"]
            head.load_state_dict(ours.classifier.modules_to_save["default"].state_dict())
    expected = _logits(peft)
    torch.testing.assert_close(_logits(ours, position_ids=_shifted_positions(ours)), expected)


@pytest.mark.parametrize("name", list(MODELS))
def test_padding_does_not_change_the_real_tokens_outputs(name: str) -> None:
    model = _trained(MODELS[name], steps=2)
    input_ids = _inputs(model)["input_ids"][:1, :6]
    padded = torch.cat([input_ids, torch.zeros(1, 3, dtype=input_ids.dtype)], dim=1)
    mask = torch.cat([torch.ones_like(input_ids), torch.zeros(1, 3, dtype=input_ids.dtype)], dim=1)
    with torch.no_grad():
        alone = model(input_ids=input_ids).logits
        with_padding = model(input_ids=padded, attention_mask=mask).logits
    if alone.dim() == 3:
        with_padding = with_padding[:, :6]
    torch.testing.assert_close(with_padding, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_generate_with_the_cache_equals_generate_without_it(name: str) -> None:
    model = _trained(MODELS[name])
    input_ids = causal_lm_batch(batch=2, length=6)["input_ids"]
    mask = torch.ones_like(input_ids)
    mask[1, :2] = 0  # the second prompt is left-padded
    options = {"attention_mask": mask, "max_new_tokens": 6, "do_sample": False}
    options["pad_token_id"] = 0
    with torch.no_grad():
        cached = model.generate(input_ids=input_ids, use_cache=True, **options)
        recomputed = model.generate(input_ids=input_ids, use_cache=False, **options)
        with peftplug.disable_adapters(model):
            plain = model.generate(input_ids=input_ids, **options)
    assert torch.equal(cached, recomputed)
    assert not torch.equal(cached, plain)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(reentrant: bool) -> None:
    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = _applied(tiny_llama, encoder_hidden_size=WIDTH).train()
        if checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": reentrant})
            model.enable_input_require_grads()
        model(**causal_lm_batch()).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def _trainer_losses(tmp_path: Path, checkpointing: bool) -> list[float]:
    model = tiny_llama()
    batch = causal_lm_batch(batch=1)  # one sequence the prefix can learn to predict
    rows = [{k: v[0] for k, v in batch.items()}] * 8
    args = peftplug.PeftArguments(
        output_dir=str(tmp_path), peft_plugins=["prefix"],
        peft_config={"prefix": {"num_virtual_tokens": TOKENS, "encoder_hidden_size": WIDTH}},
        gradient_checkpointing=checkpointing, max_steps=12, per_device_train_batch_size=8,
        learning_rate=1e-1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, **peftplug.trainer_kwargs())
    trainer.train()
    assert model.is_activation_checkpointing == checkpointing
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_trains_through_the_stock_trainer_with_gradient_checkpointing(tmp_path: Path) -> None:
    checkpointed = _trainer_losses(tmp_path, checkpointing=True)
    assert checkpointed[-1] < checkpointed[0] - 0.1, checkpointed
    plain = _trainer_losses(tmp_path, checkpointing=False)
    assert checkpointed == pytest.approx(plain, rel=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_folding_keeps_the_outputs_and_drops_the_mlp(name: str) -> None:
    model = _trained(MODELS[name], encoder_hidden_size=WIDTH)
    before = _logits(model)
    assert isinstance(prefix_store(model).prefixes["default"], PrefixEncoder)
    fold(model)
    assert isinstance(prefix_store(model).prefixes["default"], PrefixKeyValues)
    torch.testing.assert_close(_logits(model), before, rtol=1e-5, atol=1e-6)
    assert model.config.peftplug["methods"][0]["config"]["folded"] is True
    fold(model)  # folding twice changes nothing
    torch.testing.assert_close(_logits(model), before, rtol=1e-5, atol=1e-6)


def test_a_folded_adapter_saves_small_and_loads_identically(tmp_path: Path) -> None:
    model = _trained(tiny_llama, encoder_hidden_size=WIDTH)
    unfolded = _logits(model)
    peftplug.save_adapter(model, tmp_path / "unfolded")
    fold(model)
    peftplug.save_adapter(model, tmp_path / "folded")
    layers, kv_heads, head_dim = _kv_shape(model)
    stored = 4 * 2 * layers * TOKENS * kv_heads * head_dim
    folded_size = (tmp_path / "folded" / "adapter_model.safetensors").stat().st_size
    unfolded_size = (tmp_path / "unfolded" / "adapter_model.safetensors").stat().st_size
    assert stored < folded_size < stored + 1024 < unfolded_size
    loaded = peftplug.load_adapter(tiny_llama(), tmp_path / "folded")
    assert isinstance(prefix_store(loaded).prefixes["default"], PrefixKeyValues)
    torch.testing.assert_close(_logits(loaded), unfolded, rtol=1e-5, atol=1e-6)
    reloaded = peftplug.load_adapter(tiny_llama(), tmp_path / "unfolded")
    assert isinstance(prefix_store(reloaded).prefixes["default"], PrefixEncoder)
    torch.testing.assert_close(_logits(reloaded), unfolded, rtol=0, atol=0)


def test_adapters_switch_disable_and_unload_restores_the_attention() -> None:
    model = tiny_llama()
    model.set_attn_implementation("eager")
    base = _logits(model)
    peftplug.apply(model, "prefix", {"prefix": {"num_virtual_tokens": TOKENS, "init": "random"}})
    peftplug.apply(model, "prefix", {"prefix": {"num_virtual_tokens": 2}}, adapter_name="other")
    first = _logits(model)
    with peftplug.disable_adapters(model):
        torch.testing.assert_close(_logits(model), base)
    peftplug.set_active_adapter(model, "other")
    assert not torch.allclose(_logits(model), first)
    peftplug.unload(model)
    assert model.config._attn_implementation == "eager"
    assert not hasattr(model, "peftplug_prefix")
    torch.testing.assert_close(_logits(model), base, rtol=0, atol=0)


def test_the_prefix_gets_no_weight_decay() -> None:
    model = _applied(tiny_llama)
    groups = build_param_groups(model, TrainingArguments(output_dir="unused", weight_decay=0.1, report_to=[]))
    prefix = {id(p) for p in prefix_store(model).adapter_parameters("default")}
    for group in groups:
        if prefix & {id(p) for p in group["params"]}:
            assert group["weight_decay"] == 0.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"encoder_hidden_size": 0}, "128 is typical"),
        ({"projection": False, "folded": True}, "drop 'folded'"),
        ({"num_virtual_tokens": 0}, "at least 1"),
    ],
)
def test_bad_options_are_explained(options: dict, message: str) -> None:
    with pytest.raises(peftplug.ConfigError, match=message):
        peftplug.apply(tiny_llama(), "prefix", {"prefix": options})


def test_a_model_without_the_attention_interface_is_refused_and_left_alone() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
    with pytest.raises(peftplug.PeftplugError, match="AttentionInterface"):
        peftplug.apply(model, "prefix")
    assert all(p.requires_grad for p in model.parameters())
