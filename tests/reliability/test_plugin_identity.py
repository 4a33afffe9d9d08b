"""Two distributions that claim one plugin or method name: both refused, never a silent swap."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import peftplug
from peftplug.cli import main
from peftplug.plugins import PluginHost, reset_host
from peftplug.testing.fake_distribution import install_fake_distribution
from peftplug.testing.tiny_models import tiny_bert_classifier

LORA = f"peftplug-lora {importlib.metadata.version('peftplug-lora')}"
FORK = """
import peftplug

class ForkConfig(peftplug.MethodConfig):
    pass

@peftplug.hookimpl
def peftplug_register_methods(register):
    register(peftplug.MethodSpec("lora", ForkConfig))
"""


@pytest.fixture
def plugin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for variable in ("LOAD", "DISABLE", "STRICT"):
        monkeypatch.delenv(f"PEFTPLUG_{variable}_PLUGINS", raising=False)
    yield monkeypatch
    for name in ("lora_fork", "lora_turbo", "twice_dist"):
        sys.modules.pop(name, None)


@pytest.fixture
def lora_fork(tmp_path: Path, plugin_env: pytest.MonkeyPatch) -> Iterator[None]:
    """A third-party distribution whose entry point is also called ``lora``."""
    install_fake_distribution(tmp_path, "lora_fork", FORK, "lora")
    plugin_env.syspath_prepend(str(tmp_path))
    yield
    reset_host()  # a test may have built the process-wide host with the fork on sys.path


def test_one_entry_point_name_from_two_distributions_loads_neither(lora_fork: None) -> None:
    host = PluginHost()
    assert "lora" not in host.methods
    info = host.plugins["lora"]
    assert info.distribution == "lora_fork, peftplug-lora"
    assert info.error == (
        f"entry point 'lora' is claimed by plugin 'lora' (lora_fork 0.3) and plugin 'lora' "
        f"({LORA}), so none of them is loaded: uninstall one, or skip one with "
        "PEFTPLUG_DISABLE_PLUGINS=lora_fork or PEFTPLUG_DISABLE_PLUGINS=peftplug-lora"
    )
    assert "qlora" in host.methods  # the rest of the plugins still load


def test_apply_names_the_conflict_and_the_fix(lora_fork: None) -> None:
    reset_host()
    with pytest.raises(peftplug.PluginNotFoundError) as caught:
        peftplug.apply(tiny_bert_classifier(), ["lora"])
    message = str(caught.value)
    assert message.startswith("method 'lora' is not available: plugin 'lora' failed to load: ")
    assert "lora_fork 0.3" in message and LORA in message
    assert "PEFTPLUG_DISABLE_PLUGINS=lora_fork" in message and "did you mean" not in message


def test_peftplug_plugins_shows_the_conflict(
    lora_fork: None, capsys: pytest.CaptureFixture[str]
) -> None:
    reset_host()
    assert main(["plugins"]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("lora ")]
    assert "lora_fork, peftplug-lora" in row and "FAILED: entry point 'lora' is claimed" in row


@pytest.mark.parametrize(
    ("disabled", "kept"), [("lora_fork", "peftplug-lora"), ("peftplug_lora", "lora_fork")]
)
def test_disabling_one_distribution_by_name_settles_it(
    lora_fork: None, plugin_env: pytest.MonkeyPatch, disabled: str, kept: str
) -> None:
    plugin_env.setenv("PEFTPLUG_DISABLE_PLUGINS", disabled)  # compared as pip does: _ is -
    host = PluginHost()
    assert host.plugins["lora"].error is None
    assert host.methods["lora"].distribution == kept


def test_strict_mode_raises_on_the_conflict(
    lora_fork: None, plugin_env: pytest.MonkeyPatch
) -> None:
    plugin_env.setenv("PEFTPLUG_STRICT_PLUGINS", "1")
    with pytest.raises(peftplug.PluginLoadError, match=f"lora_fork 0.3.*{LORA}"):
        PluginHost()


def test_one_method_name_from_two_distributions_loads_neither(
    tmp_path: Path, plugin_env: pytest.MonkeyPatch
) -> None:
    install_fake_distribution(tmp_path, "lora_turbo", FORK, "lora-turbo")
    plugin_env.syspath_prepend(str(tmp_path))
    host = PluginHost()
    assert "lora" not in host.methods
    for name in ("lora", "lora-turbo"):
        error = host.plugins[name].error
        assert "method 'lora' is claimed by" in error, name
        assert f"({LORA})" in error and "(lora_turbo 0.3)" in error, name
    with pytest.raises(peftplug.PluginNotFoundError, match="PEFTPLUG_DISABLE_PLUGINS=lora-turbo"):
        host.method("lora")


def test_one_distribution_twice_on_sys_path_is_no_conflict(
    tmp_path: Path, plugin_env: pytest.MonkeyPatch
) -> None:
    source = """
    import peftplug

    class TwiceConfig(peftplug.MethodConfig):
        pass

    @peftplug.hookimpl
    def peftplug_register_methods(register):
        register(peftplug.MethodSpec("twice", TwiceConfig))
    """
    for folder in ("a", "b"):
        install_fake_distribution(tmp_path / folder, "twice_dist", source, "twice")
        plugin_env.syspath_prepend(str(tmp_path / folder))
    host = PluginHost()
    assert host.plugins["twice"].error is None
    assert host.methods["twice"].distribution == "twice_dist"
