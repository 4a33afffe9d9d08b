"""The plugin host: discovery, isolation of broken plugins, allow and deny lists."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pytest

import peftplug
from peftplug.plugins import PluginHost, get_host, reset_host


def _install_fake_distribution(root: Path, name: str, module_source: str) -> None:
    """A distribution on sys.path with a `peftplug` entry point to module `name`."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[peftplug]\n{name} = {name}\n")


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _install_fake_distribution(tmp_path, "broken_on_import", "raise ImportError('needs libfoo')\n")
    _install_fake_distribution(
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


def test_registering_a_taken_method_name_fails_that_plugin_only() -> None:
    host = PluginHost(discover=False)
    first, second = types.ModuleType("first"), types.ModuleType("second")

    class SameConfig(peftplug.MethodConfig):
        pass

    for module in (first, second):
        module.peftplug_register_methods = peftplug.hookimpl(
            lambda register: register(peftplug.MethodSpec("same", SameConfig))
        )
    host.add_plugin(first, "first", "first-dist", "1.0")
    host.add_plugin(second, "second", "second-dist", "1.0")
    assert host.methods["same"].plugin == "first"
    assert "already registered by plugin 'first'" in host.plugins["second"].error


def test_reset_host_rediscovers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTPLUG_LOAD_PLUGINS", "none-at-all")
    reset_host()
    try:
        assert "lora" not in get_host().methods
    finally:
        monkeypatch.delenv("PEFTPLUG_LOAD_PLUGINS")
        reset_host()
    assert "lora" in get_host().methods
