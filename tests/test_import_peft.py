"""``peftplug.import_peft`` reads what HF PEFT saves, with PEFT's outputs (PEFT: the oracle)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peftplug_lora.plugin
import peftplug_prefix.peft_equivalent
import pytest
import safetensors.torch
import torch
from peftplug_prefix.testing import as_in_peft_prefix
from torch import nn
from transformers import LlamaForCausalLM

import peftplug
from peftplug.cli import main
from peftplug.testing.model_snapshot import assert_model_unchanged, model_snapshot
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)

peft = pytest.importorskip("peft")

CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any]]] = {
    "lora-llama-rslora-all-linear": (
        tiny_llama,
        lambda: peft.LoraConfig(
            task_type="CAUSAL_LM", r=4, lora_alpha=8, use_rslora=True, target_modules="all-linear"
        ),
    ),
    "dora-llama": (
        tiny_llama,
        lambda: peft.LoraConfig(
            task_type="CAUSAL_LM", r=4, use_dora=True, target_modules=["q_proj", "v_proj"]
        ),
    ),
    "lora-bert-head": (
        tiny_bert_classifier,
        lambda: peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]),
    ),
    "lora-gpt2-conv1d-bias": (
        tiny_gpt2,
        lambda: peft.LoraConfig(
            task_type="CAUSAL_LM", r=4, target_modules=["c_attn", "c_proj"], bias="lora_only"
        ),
    ),
    "prompt-llama": (
        tiny_llama,
        lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    ),
    "prompt-bert-head": (
        tiny_bert_classifier,
        lambda: peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3),
    ),
    "ptuning-llama": (
        tiny_llama,
        lambda: peft.PromptEncoderConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=16
        ),
    ),
    "prefix-llama": (
        tiny_llama,
        lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    ),
    "prefix-llama-projection": (
        tiny_llama,
        lambda: peft.PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=3,
            prefix_projection=True,
            encoder_hidden_size=16,
        ),
    ),
    "prefix-bert-head": (
        tiny_bert_classifier,
        lambda: peft.PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3),
    ),
}


def batch_for(model: nn.Module) -> dict[str, torch.Tensor]:
    inputs = classification_batch() if hasattr(model, "classifier") else causal_lm_batch()
    return {k: v for k, v in inputs.items() if k != "labels"}


def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def saved_peft(make: Callable[[], nn.Module], config: Any, directory: Path) -> nn.Module:
    """PEFT's model with every trainable tensor moved off its start (B is not zero), saved."""
    model = peft.get_peft_model(make(), config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(directory)
    return model.eval()


def saved_tensors(directory: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(directory / "adapter_model.safetensors")


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_import_gives_peft_s_outputs_and_exports_back_to_the_same_tensors(
    case: str, tmp_path: Path
) -> None:
    make, config = CASES[case]
    peft_config = config()
    theirs = saved_peft(make, peft_config, tmp_path / "peft")
    ours = peftplug.import_peft(make(), tmp_path / "peft")
    batch = batch_for(ours)
    positions: dict[str, torch.Tensor] = {}
    if peft_config.peft_type == peft.PeftType.PREFIX_TUNING:  # PEFT numbers tokens from P
        positions = as_in_peft_prefix(theirs, batch, peft_config.num_virtual_tokens)
    expected, got = logits(theirs, batch), logits(ours, {**batch, **positions})
    expected = expected[:, expected.shape[1] - got.shape[1] :]  # PEFT keeps the prompt's logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    peftplug.export_peft(ours, tmp_path / "again")
    original, again = saved_tensors(tmp_path / "peft"), saved_tensors(tmp_path / "again")
    assert again.keys() == original.keys()
    assert all(torch.equal(again[k], original[k]) for k in original)


def test_the_imported_adapter_saves_and_loads_in_peftplug(tmp_path: Path) -> None:
    make, config = CASES["lora-bert-head"]
    theirs = saved_peft(make, config(), tmp_path / "peft")
    peftplug.save_adapter(peftplug.import_peft(make(), tmp_path / "peft"), tmp_path / "ours")
    loaded = peftplug.load_adapter(make(), tmp_path / "ours")
    batch = batch_for(loaded)
    torch.testing.assert_close(logits(loaded, batch), logits(theirs, batch), rtol=1e-5, atol=1e-5)


def test_a_second_adapter_imports_beside_the_first(tmp_path: Path) -> None:
    make, config = CASES["lora-bert-head"]
    theirs = saved_peft(make, config(), tmp_path / "peft")
    model = peftplug.apply(make(), ["lora"], {"lora": {"r": 2}})
    peftplug.import_peft(model, tmp_path / "peft", adapter_name="imported")
    peftplug.set_active_adapter(model, "imported")
    batch = batch_for(model)
    torch.testing.assert_close(logits(model, batch), logits(theirs, batch), rtol=1e-5, atol=1e-5)
    before = model_snapshot(model)
    with pytest.raises(peftplug.AdapterLoadError, match="already has adapter 'imported'"):
        peftplug.import_peft(model, tmp_path / "peft", adapter_name="imported")
    assert_model_unchanged(model, before)


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    make, config = CASES["dora-llama"]
    saved_peft(make, config(), tmp_path / "peft")
    return tmp_path / "peft"


def edit_config(directory: Path, **changes: Any) -> None:
    path = directory / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_tensors(directory: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = saved_tensors(directory)
    edit(tensors)
    safetensors.torch.save_file(tensors, directory / "adapter_model.safetensors")


A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


def drop_one(tensors: dict[str, torch.Tensor]) -> None:
    del tensors[A]


def add_one(tensors: dict[str, torch.Tensor]) -> None:
    tensors["base_model.model.model.norm.lora_A.weight"] = torch.zeros(4, 32)


def widen_one(tensors: dict[str, torch.Tensor]) -> None:
    tensors[A] = torch.zeros(5, 32)


def poison_one(tensors: dict[str, torch.Tensor]) -> None:
    tensors[A][0, 0] = float("nan")


BAD_INPUTS: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    "unknown-peft-type": (
        lambda d: edit_config(d, peft_type="IA3"),
        peftplug.AdapterLoadError,
        "no installed method imports HF PEFT's peft_type 'IA3'; installed methods: .*lora",
    ),
    "missing-tensor": (
        lambda d: edit_tensors(d, drop_one),
        peftplug.AdapterLoadError,
        f"lacks tensor '{A}'",
    ),
    "extra-tensor": (
        lambda d: edit_tensors(d, add_one),
        peftplug.AdapterLoadError,
        "holds tensor 'base_model.model.model.norm.lora_A.weight', which has no place",
    ),
    "wrong-shape": (
        lambda d: edit_tensors(d, widen_one),
        peftplug.AdapterLoadError,
        rf"'{A}' has shape \[5, 32\] but this model's has \[4, 32\]",
    ),
    "non-finite": (
        lambda d: edit_tensors(d, poison_one),
        peftplug.AdapterLoadError,
        f"tensor '{A}' holds NaN or Inf",
    ),
    "corrupt-safetensors": (
        lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x00garbage"),
        peftplug.AdapterLoadError,
        "cannot read .*adapter_model.safetensors as safetensors",
    ),
    "no-weights": (
        lambda d: (d / "adapter_model.safetensors").unlink(),
        peftplug.AdapterLoadError,
        "has adapter_config.json but no adapter_model.safetensors",
    ),
    "pickle-weights": (
        lambda d: (d / "adapter_model.safetensors").rename(d / "adapter_model.bin"),
        peftplug.AdapterLoadError,
        "holds adapter_model.bin, a pickle",
    ),
    "no-config": (
        lambda d: (d / "adapter_config.json").unlink(),
        peftplug.AdapterLoadError,
        "no HF PEFT adapter in",
    ),
    "corrupt-config": (
        lambda d: (d / "adapter_config.json").write_text("{"),
        peftplug.AdapterLoadError,
        "cannot read .*adapter_config.json",
    ),
    "rank-pattern": (
        lambda d: edit_config(d, rank_pattern={"q_proj": 8}),
        peftplug.ConfigError,
        r"sets rank_pattern=\{'q_proj': 8\}, a LORA feature that peftplug's 'lora' does not have",
    ),
    "layers-to-transform": (
        lambda d: edit_config(d, layers_to_transform=[0]),
        peftplug.ConfigError,
        "sets layers_to_transform=",
    ),
    "pissa": (
        lambda d: edit_config(d, init_lora_weights="pissa"),
        peftplug.ConfigError,
        "init_lora_weights='pissa'",
    ),
    "targets-elsewhere": (
        lambda d: edit_config(d, target_modules=["query"]),
        peftplug.AdapterLoadError,
        "does not fit this model: target_modules",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_clearly_and_leaves_the_model_unchanged(
    case: str, lora_dir: Path
) -> None:
    damage, error, message = BAD_INPUTS[case]
    damage(lora_dir)
    model = tiny_llama()
    before = model_snapshot(model)
    with pytest.raises(error, match=message):
        peftplug.import_peft(model, lora_dir)
    assert_model_unchanged(model, before)


def drop_a_tensor(equivalent: peftplug.PeftEquivalent) -> peftplug.PeftEquivalent:
    tensors = dict(equivalent.tensors)
    del tensors[min(tensors)]
    return peftplug.PeftEquivalent(equivalent.config, tensors)


def copy_a_tensor(equivalent: peftplug.PeftEquivalent) -> peftplug.PeftEquivalent:
    tensors = dict(equivalent.tensors)
    first = min(tensors)
    return peftplug.PeftEquivalent(equivalent.config, {**tensors, first: tensors[first].clone()})


@pytest.mark.parametrize(
    ("bug", "message"),
    [
        (drop_a_tensor, "leaves the adapter's .* out"),
        (copy_a_tensor, "is not one of the adapter's live tensors"),
    ],
)
def test_an_equivalent_that_misses_the_live_tensors_is_a_plugin_error(
    bug: Callable[[peftplug.PeftEquivalent], peftplug.PeftEquivalent],
    message: str,
    lora_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    correct = peftplug_lora.plugin.peft_equivalent
    monkeypatch.setattr(peftplug_lora.plugin, "peft_equivalent", lambda *a: bug(correct(*a)))
    model = tiny_llama()
    before = model_snapshot(model)
    with pytest.raises(peftplug.PluginError, match=message):
        peftplug.import_peft(model, lora_dir)
    assert_model_unchanged(model, before)


def test_non_finite_tensors_import_when_allowed(lora_dir: Path) -> None:
    edit_tensors(lora_dir, poison_one)
    model = peftplug.import_peft(tiny_llama(), lora_dir, allow_non_finite=True)
    layer = model.get_submodule("model.layers.0.self_attn.q_proj")
    assert layer.lora_A["default"].weight.isnan().any()


@pytest.fixture
def prefix_dir(tmp_path: Path) -> Path:
    make, config = CASES["prefix-llama"]
    saved_peft(make, config(), tmp_path / "peft")
    return tmp_path / "peft"


def test_a_misshapen_prefix_table_is_refused_and_leaves_the_model_unchanged(
    prefix_dir: Path,
) -> None:
    def narrow(tensors: dict[str, torch.Tensor]) -> None:
        tensors["prompt_embeddings"] = tensors["prompt_embeddings"][:, :-1].contiguous()

    edit_tensors(prefix_dir, narrow)
    model = tiny_llama()
    before = model_snapshot(model)
    message = r"'prompt_embeddings' has shape \[3, 63\] but this model's has \[3, 64\]"
    with pytest.raises(peftplug.AdapterLoadError, match=message):
        peftplug.import_peft(model, prefix_dir)
    assert_model_unchanged(model, before)


KeysValues = tuple[torch.Tensor, torch.Tensor]


def swap(keys_values: KeysValues) -> KeysValues:
    return keys_values[1], keys_values[0]


def fail(keys_values: KeysValues) -> KeysValues:
    raise RuntimeError("no inverse")


@pytest.mark.parametrize(
    ("bug", "message"),
    [
        (swap, "loaded PEFT's 'prompt_encoder.default.embedding.weight' but does not give it"),
        (fail, r"failed to load PEFT's tensors \(RuntimeError: no inverse\)"),
    ],
)
def test_a_load_that_is_not_the_inverse_is_a_plugin_error(
    bug: Callable[[KeysValues], KeysValues],
    message: str,
    prefix_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = peftplug_prefix.peft_equivalent
    correct = module.keys_values_of_table
    monkeypatch.setattr(module, "keys_values_of_table", lambda *a: bug(correct(*a)))
    model = tiny_llama()
    before = model_snapshot(model)
    with pytest.raises(peftplug.PluginError, match=message):
        peftplug.import_peft(model, prefix_dir)
    assert_model_unchanged(model, before)


def test_the_cli_imports_onto_the_recorded_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_llama().save_pretrained(tmp_path / "base")

    def make() -> nn.Module:
        return LlamaForCausalLM.from_pretrained(tmp_path / "base")

    theirs = saved_peft(make, CASES["dora-llama"][1](), tmp_path / "peft")
    assert main(["import", str(tmp_path / "peft"), "--out", str(tmp_path / "out")]) == 0
    assert "imported as lora" in capsys.readouterr().out
    loaded = peftplug.load_adapter(make(), tmp_path / "out")
    batch = batch_for(loaded)
    torch.testing.assert_close(logits(loaded, batch), logits(theirs, batch), rtol=1e-5, atol=1e-5)
    assert main(["import", str(tmp_path / "peft"), "--out", str(tmp_path / "out")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_the_cli_refuses_a_directory_without_an_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["import", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "peftplug import: error: no HF PEFT adapter in" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
