"""Typed configs parse strictly and explain what is wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from peftplug import ConfigError, MethodConfig
from peftplug.plugins import get_host

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclasses.dataclass
class ExampleConfig(MethodConfig):
    method = "example"
    rank: int = 8
    scale: float = 1.0
    mode: Literal["fast", "exact"] = "fast"
    names: list[str] | str | None = None
    ratio: float | None = None


def test_round_trip_through_a_dict() -> None:
    config = ExampleConfig.from_dict({"rank": 4, "scale": 2, "names": ["a", "b"]})
    assert config == ExampleConfig(rank=4, scale=2.0, names=["a", "b"])
    assert isinstance(config.scale, float)
    assert ExampleConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rnak": 4}, "unknown 'example' option 'rnak' \\(did you mean 'rank'\\?\\)"),
        ({"rank": "8"}, "option 'rank' must be int, got '8'"),
        ({"rank": True}, "option 'rank' must be int"),
        ({"scale": "x"}, "option 'scale' must be float"),
        ({"mode": "fsat"}, "must be one of 'fast', 'exact', got 'fsat' \\(did you mean 'fast'\\?\\)"),
        ({"names": [1]}, "option 'names' must be a list of str or str or None"),
        ({"ratio": "1"}, "option 'ratio' must be float or None"),
    ],
)
def test_bad_values_are_named(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExampleConfig.from_dict(values)


def test_a_one_letter_option_is_suggested_for_a_word_that_starts_with_it() -> None:
    with pytest.raises(ConfigError) as caught:
        get_host().method("lora").parse_config({"rnak": 4})
    quoted = "unknown 'lora' option 'rnak' (did you mean 'r'?)"
    assert str(caught.value).startswith(f"{quoted}; valid options: alpha, bias, dropout, ")
    assert f"`{quoted}`" in " ".join(README.read_text().split())  # the README's example holds


def test_a_non_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        ExampleConfig.from_dict(["rank", 4])
