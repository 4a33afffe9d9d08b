"""The `peftplug` command line."""

from __future__ import annotations

import json
import sys

import pytest

from peftplug.cli import main


def test_plugins_lists_lora_with_its_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed["lora"]["distribution"] == "peftplug-lora"
    assert listed["lora"]["methods"] == ["lora"] and listed["lora"]["error"] is None
    assert main(["plugins"]) == 0
    assert "peftplug-lora" in capsys.readouterr().out


def test_info_reports_versions_and_the_extension(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"].startswith("2.") and "lora" in info["methods"]
    assert set(info["extension"]) >= {"loaded", "kernels"}


def test_a_missing_subcommand_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2


def test_python_dash_m_peftplug_is_the_same_command_line() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "peftplug", "plugins", "--json"], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lora" in {plugin["name"] for plugin in json.loads(result.stdout)}


@pytest.fixture
def command_plugins(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Two installed plugins that add commands: one well-formed, one reusing ``train``."""
    from peftplug.plugins import reset_host
    from peftplug.testing.fake_distribution import install_fake_distribution

    install_fake_distribution(
        tmp_path,
        "greeter",
        """
        from peftplug import hookimpl

        def _greet(arguments):
            print(f"hello {arguments.who}")
            return 0

        @hookimpl
        def peftplug_register_commands(commands):
            parser = commands.add_parser("greet", help="say hello")
            parser.add_argument("who")
            parser.set_defaults(run=_greet)
        """,
    )
    install_fake_distribution(
        tmp_path,
        "clasher",
        """
        from peftplug import hookimpl

        @hookimpl
        def peftplug_register_commands(commands):
            commands.add_parser("shout")
            commands.add_parser("train")
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for variable in ("PEFTPLUG_LOAD_PLUGINS", "PEFTPLUG_DISABLE_PLUGINS", "PEFTPLUG_STRICT_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    reset_host()
    yield
    reset_host()
    for name in ("greeter", "clasher"):
        sys.modules.pop(name, None)


def test_a_plugin_adds_a_command_and_a_clashing_one_is_left_out(
    command_plugins: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["greet", "world"]) == 0
    captured = capsys.readouterr()
    assert "hello world" in captured.out
    assert "plugin 'clasher' could not add its commands" in captured.err and "train" in captured.err
    with pytest.raises(SystemExit) as caught:  # the clasher's other command went with it
        main(["shout"])
    assert caught.value.code == 2
    assert main(["plugins"]) == 0
    assert "command greet" in capsys.readouterr().out


def test_compare_without_its_distribution_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from peftplug.plugins import reset_host

    monkeypatch.setenv("PEFTPLUG_DISABLE_PLUGINS", "peftplug-compare")
    reset_host()
    try:
        assert main(["compare", "--steps", "3"]) == 2
    finally:
        reset_host()
    assert "pip install peftplug-compare" in capsys.readouterr().err
