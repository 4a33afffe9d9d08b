"""An installed method that the environment skips is explained as skipped, not "not installed"."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import pytest

import peftplug
from peftplug.plugins import get_host, reset_host
from peftplug.testing.model_snapshot import assert_model_unchanged, model_snapshot
from peftplug.testing.tiny_models import tiny_bert_classifier

LORA = f"peftplug-lora {importlib.metadata.version('peftplug-lora')}"
SKIPS = {
    "disabled": ("PEFTPLUG_DISABLE_PLUGINS", "lora", "PEFTPLUG_DISABLE_PLUGINS='lora' names it"),
    "not loaded": (
        "PEFTPLUG_LOAD_PLUGINS",
        "bitfit",
        "PEFTPLUG_LOAD_PLUGINS='bitfit' leaves it out",
    ),
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for variable in ("LOAD", "DISABLE", "STRICT"):
        monkeypatch.delenv(f"PEFTPLUG_{variable}_PLUGINS", raising=False)
    reset_host()
    yield monkeypatch
    reset_host()


@pytest.mark.parametrize("skip", sorted(SKIPS))
def test_apply_says_the_method_is_installed_but_skipped(
    clean_env: pytest.MonkeyPatch, skip: str
) -> None:
    variable, value, reason = SKIPS[skip]
    clean_env.setenv(variable, value)
    reset_host()
    model = tiny_bert_classifier()
    before = model_snapshot(model)
    with pytest.raises(peftplug.PluginNotFoundError) as caught:
        peftplug.apply(model, ["lora"])
    message = str(caught.value)
    assert f"'lora' is installed ({LORA}) but skipped: {reason}" in message
    assert "pip install" not in message
    assert_model_unchanged(model, before)


def test_load_adapter_says_the_method_is_disabled(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    saved = peftplug.save_adapter(peftplug.apply(tiny_bert_classifier(), ["lora"]), tmp_path / "a")
    clean_env.setenv("PEFTPLUG_DISABLE_PLUGINS", "lora")
    reset_host()
    model = tiny_bert_classifier()
    before = model_snapshot(model)
    with pytest.raises(peftplug.AdapterLoadError) as caught:
        peftplug.load_adapter(model, saved)
    message = str(caught.value)
    assert "needs method 'lora'" in message and "PEFTPLUG_DISABLE_PLUGINS='lora'" in message
    assert "not installed" not in message
    assert_model_unchanged(model, before)


def test_a_method_nobody_installed_still_says_how_to_install_it(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    saved = peftplug.save_adapter(peftplug.apply(tiny_bert_classifier(), ["lora"]), tmp_path / "a")
    host = get_host()
    clean_env.delitem(host.methods, "lora")  # as if peftplug-lora were uninstalled
    clean_env.delitem(host.plugins, "lora")
    with pytest.raises(
        peftplug.AdapterLoadError,
        match=f"from {LORA}, which is not installed: pip install peftplug-lora",
    ):
        peftplug.load_adapter(tiny_bert_classifier(), saved)
