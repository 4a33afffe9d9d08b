"""Every hook is documented and exercised; the README shows the two commands."""

from __future__ import annotations

import inspect
import re
import sys
import types
from pathlib import Path

import pytest

from peftplug import hookspecs
from peftplug.plugins import get_host
from peftplug.testing import MethodConformance

ROOT = Path(__file__).resolve().parent.parent


def _hook_names() -> list[str]:
    return [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("peftplug_")]


def test_every_hook_has_a_section_in_docs() -> None:
    documented = set(re.findall(r"^## `(peftplug_\w+)\(", (ROOT / "docs" / "hooks.md").read_text(), re.M))
    assert documented == set(_hook_names())


def test_every_hook_has_a_docstring() -> None:
    assert all(getattr(hookspecs, name).__doc__ for name in _hook_names())


def test_every_hook_is_called_and_used_by_a_test() -> None:
    """Called by the core, or by the tool distribution it serves (``--vs-peft`` in compare)."""
    callers = [*(ROOT / "peftplug").rglob("*.py"), *ROOT.glob("plugins/peftplug-compare/src/*/*.py")]
    core = "".join(p.read_text() for p in callers)
    tests = "".join(p.read_text() for p in [*ROOT.glob("tests/*.py"), *ROOT.glob("plugins/*/tests/*.py")])
    implementations = "".join(
        p.read_text()
        for p in [*ROOT.glob("plugins/*/src/*/plugin.py"), ROOT / "peftplug" / "builtin_weights.py"]
    )
    for name in _hook_names():
        assert f"hook.{name}" in core or f"{name}.get_hookimpls" in core, f"{name} is never called"
        assert f"def {name}(" in implementations + tests, f"{name} is implemented by no plugin or test"


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:1500]
    assert "make demo" in head and "make test" in head


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _documented_example() -> types.ModuleType:
    text = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    (source,) = [block for block in _python_blocks(text) if "class ScaleConfig" in block]
    module = types.ModuleType("documented_scale_plugin")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, "docs/writing-a-plugin.md", "exec"), module.__dict__)
    return module


@pytest.fixture(autouse=True, scope="class")
def _register_documented_example() -> None:
    host = get_host()
    if "scale" not in host.methods:
        host.add_plugin(_documented_example(), "scale", "docs-example", "0.1.0")
    assert host.plugins["scale"].error is None


class TestDocumentedExamplePlugin(MethodConformance):
    method = "scale"
    config = {"target_modules": ["query", "value", "dense"]}


def test_the_task_head_walkthrough_runs_as_written() -> None:
    text = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    (source,) = [block for block in _python_blocks(text) if "SavedModuleLayer" in block]
    exec(compile(source, "docs/writing-a-plugin.md", "exec"), {})
