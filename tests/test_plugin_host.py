"""The plugin host: discovery, isolation of broken plugins, allow and deny lists."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import peftplug
from peftplug.plugins import PluginHost, get_host, reset_host
from peftplug.testing.fake_distribution import install_fake_distribution


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_fake_distribution(tmp_path, "broken_on_import", "raise ImportError('needs libfoo')\n")
    install_fake_distribution(
        tmp_path,
        "misspelled_hook",
        """
        from peftplug import hookimpl

        @hookimpl
        def peftplug_prepare_modle(model, config, adapter_name):
            return None
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for variable in ("PEFTPLUG_LOAD_PLUGINS", "PEFTPLUG_DISABLE_PLUGINS", "PEFTPLUG_STRICT_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    yield tmp_path
    for name in ("broken_on_import", "misspelled_hook"):
        sys.modules.pop(name, None)


def test_a_broken_plugin_is_reported_and_skipped(fake_plugins: Path) -> None:
    host = PluginHost()
    assert "lora" in host.methods
    assert "needs libfoo" in host.plugins["broken_on_import"].error
    assert host.plugins["broken_on_import"].distribution == "broken_on_import"
    assert "peftplug_prepare_modle" in host.plugins["misspelled_hook"].error
    assert not host.manager.has_plugin("misspelled_hook")
    host.manager.check_pending()


def test_strict_mode_raises_on_a_broken_plugin(
    fake_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEFTPLUG_STRICT_PLUGINS", "1")
    with pytest.raises(peftplug.PluginLoadError, match="broken_on_import|misspelled_hook"):
        PluginHost()


def test_allow_list_loads_only_the_named_plugins(
    fake_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEFTPLUG_LOAD_PLUGINS", "lora")
    host = PluginHost()
    assert set(host.plugins) == {"peftplug.builtin", "lora"}


def test_deny_list_skips_the_named_plugins(
    fake_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEFTPLUG_DISABLE_PLUGINS", "lora, broken_on_import")
    host = PluginHost()
    assert "lora" not in host.plugins and "broken_on_import" not in host.plugins
    assert "misspelled_hook" in host.plugins


def test_unknown_method_lists_the_installed_ones() -> None:
    with pytest.raises(peftplug.PluginNotFoundError) as caught:
        get_host().method("lorra")
    message = str(caught.value)
    assert "did you mean 'lora'" in message and "installed: " in message and "lora" in message
    assert "pip install peftplug-<name>" in message


def _registering(*names: str) -> types.ModuleType:
    """A plugin module whose hook registers a method for each of ``names``."""
    module = types.ModuleType("plugin")

    def register_methods(register) -> None:  # noqa: ANN001
        for name in names:
            register(peftplug.MethodSpec(name, type(f"{name}Config", (peftplug.MethodConfig,), {})))

    module.peftplug_register_methods = peftplug.hookimpl(register_methods)
    return module


def test_two_plugins_registering_one_method_name_are_both_refused() -> None:
    host = PluginHost(discover=False)
    first = _registering("same", "own")
    host.add_plugin(first, "first", "first-dist", "1.0")
    host.add_plugin(_registering("same"), "second", "second-dist", "2.0")
    host.add_plugin(_registering("same"), "third", "third-dist", "3.0")
    assert "same" not in host.methods and "own" not in host.methods  # no partial plugin
    assert not host.manager.is_registered(first)
    for name in ("first", "second"):
        error = host.plugins[name].error
        assert "plugin 'first' (first-dist 1.0) and plugin 'second' (second-dist 2.0)" in error
    assert "plugin 'third' (third-dist 3.0)" in host.plugins["third"].error
    with pytest.raises(peftplug.PluginNotFoundError) as caught:
        host.method("same")
    message = str(caught.value)
    assert message.startswith("method 'same' is claimed by plugin 'first' (first-dist 1.0)")
    assert "first-dist" in message and "second-dist" in message and "third-dist" in message
    assert "uninstall one, or skip one with PEFTPLUG_DISABLE_PLUGINS=first or" in message


def test_a_method_registered_twice_by_one_plugin_fails_that_plugin() -> None:
    host = PluginHost(discover=False)
    host.add_plugin(_registering("twice", "twice"), "doubled", "doubled-dist", "1.0")
    assert "method 'twice' is registered twice" in host.plugins["doubled"].error
    assert "twice" not in host.methods


def test_a_method_whose_plugin_failed_says_why() -> None:
    host = PluginHost(discover=False)
    host.add_plugin(_registering("lora", "lora"), "lora", "peftplug-lora", "0.1.0")
    with pytest.raises(peftplug.PluginNotFoundError) as caught:
        host.method("lora")
    assert str(caught.value) == (
        "method 'lora' is not available: plugin 'lora' failed to load: "
        "ValueError: method 'lora' is registered twice"
    )


def test_reset_host_rediscovers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTPLUG_LOAD_PLUGINS", "none-at-all")
    reset_host()
    try:
        assert "lora" not in get_host().methods
    finally:
        monkeypatch.delenv("PEFTPLUG_LOAD_PLUGINS")
        reset_host()
    assert "lora" in get_host().methods
