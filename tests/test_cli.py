"""The `peftplug` command line."""

from __future__ import annotations

import json

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
