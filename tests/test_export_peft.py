"""``peftplug.export_peft`` writes what HF PEFT loads with the same outputs (PEFT: the oracle)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import peftplug_prefix
import peftplug_ptuning
import pytest
import torch
from peftplug_prefix.testing import as_in_peft_prefix
from torch import nn

import peftplug
from peftplug.export import PEFT_FILES
from peftplug.testing.peft_oracle import (
    CASES,
    assert_same_as_peft,
    batch_for,
    logits,
    train,
    trained,
)
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_llama,
)

peft = pytest.importorskip("peft")


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
    assert_same_as_peft(model, loaded, batch, extra)


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
