"""Bad values given to ``PeftArguments`` and ``apply``: a ``ConfigError`` naming the fix."""

from __future__ import annotations

from typing import Any

import pytest

import peftplug
from peftplug.testing.model_snapshot import assert_model_unchanged, model_snapshot
from peftplug.testing.tiny_models import tiny_bert_classifier


@pytest.mark.parametrize(
    ("peft_config", "message"),
    [
        ('["lora"]', r"peft_config must map method names to their options, got list \['lora'\]"),
        ("8", "peft_config must map method names to their options, got int 8"),
        ('{"lora": 8}', r"peft_config\['lora'\] must be the method's options .* got int 8"),
        ('{"lora": ["r"]}', r"peft_config\['lora'\] must be the method's options .* got list"),
        ('{"lora": {"r": 8}', "--peft_config is not valid JSON"),
        ({"lora": {"rank": 8}}, "rank"),
    ],
)
def test_peft_arguments_refuse_a_malformed_peft_config(
    tmp_path: Any, peft_config: object, message: str
) -> None:
    with pytest.raises(peftplug.ConfigError, match=message):
        peftplug.PeftArguments(
            output_dir=str(tmp_path), peft_plugins=["lora"], peft_config=peft_config, report_to=[]
        )


@pytest.mark.parametrize("plugins", [8, ["lora", 3], [None]])
def test_peft_arguments_refuse_plugins_that_are_not_names(tmp_path: Any, plugins: object) -> None:
    with pytest.raises(peftplug.ConfigError, match="plugins must be method names"):
        peftplug.PeftArguments(output_dir=str(tmp_path), peft_plugins=plugins, report_to=[])


def test_a_single_method_name_is_a_list_of_one(tmp_path: Any) -> None:
    args = peftplug.PeftArguments(output_dir=str(tmp_path), peft_plugins="lora", report_to=[])
    assert args.peft_plugins == ["lora"]


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("lora", {"r": 10**9}),
        ("prompt", {"num_virtual_tokens": 10**9, "init": "random"}),
        ("adapter", {"bottleneck_size": 10**9}),
    ],
)
def test_options_too_large_to_allocate_are_a_config_error(
    method: str, options: dict[str, Any]
) -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["bitfit"])  # an earlier adapter is kept too
    before = model_snapshot(model)
    with pytest.raises(peftplug.ConfigError, match=f"method '{method}' ran out of memory .* GiB"):
        peftplug.apply(model, [method], {method: options}, adapter_name="big")
    assert_model_unchanged(model, before)
