"""The environment `make env` builds holds exactly the distributions pinned in constraints.txt."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"

pytestmark = [
    pytest.mark.pinned_environment,
    pytest.mark.skipif(
        Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
        reason="checks the environment `make env` builds (.venv), not this one",
    ),
]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_canonical(name)] = version
    return pins


def _installed() -> dict[str, str]:
    """Every distribution installed in the environment (as pip freeze lists them, not the copies
    vendored inside setuptools) but ours, with local labels (+cpu) dropped."""
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    distributions = importlib.metadata.distributions(path=site)
    found = {_canonical(d.metadata["Name"]): d.version.split("+")[0] for d in distributions}
    return {name: version for name, version in found.items() if not name.startswith("peftplug")}


def test_the_environment_is_exactly_the_lock() -> None:
    locked, installed = _locked(), _installed()
    problems = [f"{n}: installed {installed[n]}, locked {v}" for n, v in locked.items() if n in installed and installed[n] != v]
    problems += [f"{n}=={v} is locked but not installed" for n, v in locked.items() if n not in installed]
    problems += [f"{n}=={v} is installed but not locked" for n, v in installed.items() if n not in locked]
    assert not problems, "rebuild with `make clean env`, or update constraints.txt:\n" + "\n".join(sorted(problems))
