"""Each plugin distribution installs alone on top of the core and shows in `peftplug plugins`.

A fresh virtualenv sees the third-party packages of the running environment (torch,
transformers, ...) through a path file, but none of the peftplug distributions installed there;
then the core and one plugin are installed into it, without network access.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = sorted(p for p in (ROOT / "plugins").glob("peftplug-*") if (p / "pyproject.toml").is_file())
pytestmark = pytest.mark.slow


def _third_party_only(target: Path) -> None:
    """Link every entry of our site-packages except peftplug's own into ``target``."""
    target.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if "peftplug" in entry.name.lower() or entry.suffix == ".pth":
            continue
        (target / entry.name).symlink_to(entry)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alone")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    shared = root / "third-party"
    _third_party_only(shared)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(site, "third_party.pth").write_text(f"{shared}\n")
    _pip(venv, str(ROOT))
    return venv


def _pip(venv: Path, *what: str) -> None:
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", *what],
        check=True,
        # the compiled extension is the core's own business, tested elsewhere: skip its build
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PEFTPLUG_BUILD_EXT": "0"},
    )


def _plugins(venv: Path) -> list[dict]:
    output = subprocess.run(
        [venv / "bin" / "python", "-m", "peftplug.cli", "plugins", "--json"],
        check=True, capture_output=True, text=True, env={**os.environ, "PEFTPLUG_STRICT_PLUGINS": "1"},
    ).stdout
    return json.loads(output)


def _cli(venv: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv / "bin" / "python", "-m", "peftplug.cli", *arguments], capture_output=True, text=True
    )


def test_the_core_alone_has_no_plugins(core_venv: Path) -> None:
    assert _plugins(core_venv) == []


def test_the_core_cli_works_without_compare_and_says_how_to_add_it(core_venv: Path) -> None:
    assert _cli(core_venv, "train", "--help").returncode == 0
    missing = _cli(core_venv, "compare", "--steps", "3")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "pip install peftplug-compare" in missing.stderr
    assert "pip install peftplug-compare" in _cli(core_venv, "--help").stdout


@pytest.mark.parametrize("plugin", PLUGINS, ids=[p.name for p in PLUGINS])
def test_a_plugin_installs_alone_and_is_listed(core_venv: Path, plugin: Path) -> None:
    """Alone on the core, with only the peftplug plugins it declares (P-tuning needs prompt)."""
    declared = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]["dependencies"]
    needed = [ROOT / "plugins" / re.split(r"[<>=!~ ]", d)[0] for d in declared if d.startswith("peftplug-")]
    _pip(core_venv, *map(str, needed), str(plugin))
    try:
        listed = {p["distribution"]: p for p in _plugins(core_venv)}
        assert set(listed) == {plugin.name, *(n.name for n in needed)}
        assert listed[plugin.name]["error"] is None
        if plugin.name == "peftplug-compare":  # a tool: it adds a command, no method
            assert _cli(core_venv, "compare", "--help").returncode == 0
        else:
            assert listed[plugin.name]["methods"]
    finally:
        subprocess.run(
            [core_venv / "bin" / "python", "-m", "pip", "uninstall", "-q", "-y", plugin.name,
             *(n.name for n in needed)],
            check=True,
        )
