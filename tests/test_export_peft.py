"""``peftplug.export_peft`` writes what HF PEFT loads with the same outputs (PEFT: the oracle)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import peftplug_prefix
import peftplug_ptuning
import pytest
import torch
from peftplug_prefix.testing import show_peft_the_cache_parameter
from torch import nn

import peftplug
from peftplug.export import PEFT_FILES
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)

peft = pytest.importorskip("peft")

CASES: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "lora-bert-head": (tiny_bert_classifier, "lora", {"r": 4, "alpha": 8}),
    "lora-llama-rslora-all-linear": (
        tiny_llama,
        "lora",
        {"r": 4, "use_rslora": True, "target_modules": "all-linear"},
    ),
    "lora-gpt2-conv1d": (tiny_gpt2, "lora", {"r": 4, "target_modules": ["c_attn", "c_proj"]}),
    "dora-llama": (
        tiny_llama,
        "lora",
        {"r": 4, "use_dora": True, "target_modules": ["q_proj", "v_proj"]},
    ),
    "dora-bert-head": (tiny_bert_classifier, "lora", {"r": 4, "use_dora": True}),
    "prompt-llama": (tiny_llama, "prompt", {"num_virtual_tokens": 3, "init": "random"}),
    "prompt-bert-head": (tiny_bert_classifier, "prompt", {"num_virtual_tokens": 3}),
    "ptuning-llama-lstm": (
        tiny_llama,
        "ptuning",
        {"num_virtual_tokens": 3, "encoder": "lstm", "encoder_hidden_size": 16},
    ),
    "ptuning-bert-head-mlp": (
        tiny_bert_classifier,
        "ptuning",
        {"num_virtual_tokens": 3, "encoder_hidden_size": 16},
    ),
    "prefix-llama-mlp": (
        tiny_llama,
        "prefix",
        {"num_virtual_tokens": 3, "encoder_hidden_size": 16},
    ),
    "prefix-bert-head": (
        tiny_bert_classifier,
        "prefix",
        {"num_virtual_tokens": 3, "projection": False},
    ),
}


def batch_for(model: nn.Module) -> dict[str, torch.Tensor]:
    return classification_batch() if hasattr(model, "classifier") else causal_lm_batch()


def train(model: nn.Module, steps: int = 2) -> nn.Module:
    """A few SGD steps on what trains (the active adapter)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch_for(model)).loss.backward()
        optimizer.step()
    return model.eval()


def trained(make: Any, method: str, options: dict[str, Any]) -> nn.Module:
    return train(peftplug.apply(make(), [method], {method: options}))


def logits(model: nn.Module, batch: dict[str, torch.Tensor], **extra: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}, **extra).logits


def as_in_peft_prefix(
    loaded: nn.Module, batch: dict[str, torch.Tensor], tokens: int
) -> dict[str, torch.Tensor]:
    """The ``position_ids`` that number our tokens as PEFT's prefix tuning does: its prefix is its
    KV cache, so the real tokens start at ``tokens`` (ours at 0). Also lets ``loaded`` (PEFT's
    model) find a classifier's cache parameter, renamed by transformers 5.24."""
    if hasattr(loaded.base_model, "classifier"):
        show_peft_the_cache_parameter(
            loaded.base_model.get_submodule(loaded.transformer_backbone_name)
        )
    batch_size, length = batch["input_ids"].shape
    return {"position_ids": torch.arange(tokens, tokens + length).expand(batch_size, -1)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_export_loads_in_hf_peft_with_the_same_outputs(case: str, tmp_path: Path) -> None:
    make, method, options = CASES[case]
    model = trained(make, method, options)
    peftplug.export_peft(model, tmp_path / "peft")
    loaded = peft.PeftModel.from_pretrained(make(), tmp_path / "peft").eval()
    batch = batch_for(model)
    extra: dict[str, torch.Tensor] = {}
    if method == "prefix":
        extra = as_in_peft_prefix(loaded, batch, options["num_virtual_tokens"])
    ours, theirs = logits(model, batch, **extra), logits(loaded, batch)
    if theirs.shape != ours.shape:  # PEFT's causal LM keeps the virtual positions' logits
        theirs = theirs[:, theirs.shape[1] - ours.shape[1] :]
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "fold"), [("ptuning", peftplug_ptuning.fold), ("prefix", peftplug_prefix.fold)]
)
def test_an_encoder_exports_as_its_output_so_folding_first_writes_the_same_files(
    method: str, fold: Callable[[nn.Module], nn.Module], tmp_path: Path
) -> None:
    model = trained(tiny_llama, method, {"num_virtual_tokens": 3, "encoder_hidden_size": 16})
    encoder, folded = tmp_path / "encoder", tmp_path / "folded"
    peftplug.export_peft(model, encoder)
    peftplug.export_peft(fold(model), folded)
    for name in PEFT_FILES:
        assert (folded / name).read_bytes() == (encoder / name).read_bytes(), name


def test_lora_exports_also_load_in_transformers(tmp_path: Path) -> None:
    model = trained(tiny_llama, "lora", {"r": 4})
    peftplug.export_peft(model, tmp_path / "peft")
    base = tiny_llama()
    base.load_adapter(str(tmp_path / "peft"))
    batch = causal_lm_batch()
    torch.testing.assert_close(logits(base, batch), logits(model, batch), rtol=1e-5, atol=1e-5)


def test_a_method_without_a_peft_equivalent_is_refused_clearly(tmp_path: Path) -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["bitfit"])
    with pytest.raises(peftplug.ConfigError, match="'bitfit' has no HF PEFT equivalent"):
        peftplug.export_peft(model, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()


def test_two_methods_in_one_adapter_are_refused(tmp_path: Path) -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["lora", "bitfit"])
    with pytest.raises(peftplug.ConfigError, match="holds lora, bitfit"):
        peftplug.export_peft(model, tmp_path / "peft")


def test_one_adapter_of_two_exports_with_its_own_head(tmp_path: Path) -> None:
    model = trained(tiny_bert_classifier, "lora", {"r": 4})
    peftplug.apply(model, ["lora"], {"lora": {"r": 2}}, adapter_name="second")
    peftplug.set_active_adapter(model, "second")
    second = train(model, steps=1)
    peftplug.export_peft(second, tmp_path / "peft", adapter_name="second")
    loaded = peft.PeftModel.from_pretrained(tiny_bert_classifier(), tmp_path / "peft").eval()
    batch = classification_batch()
    torch.testing.assert_close(logits(loaded, batch), logits(second, batch), rtol=1e-5, atol=1e-5)
