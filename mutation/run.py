"""Run each plugin's conformance suite against every mutant of the corpus; print the kill rate.

    python -m mutation.run [--plugin lora] [--list]

A mutant is planted in a copy of the plugin's package, which is put first on ``PYTHONPATH`` so
the installed (editable) plugin is shadowed; the working tree is never modified. Only the
plugin's ``tests/test_conformance.py`` (``MethodConformance`` subclasses) runs. A mutant is
killed when that run fails; the unmutated package must pass first.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mutation.mutants import CORPUS, Mutant

ROOT = Path(__file__).resolve().parent.parent


def package_dir(plugin: str) -> Path:
    """The source folder of the plugin's package (``peftplug_<plugin>``)."""
    return Path(importlib.import_module(f"peftplug_{plugin}").__file__).parent


def plant(mutant: Mutant, target: Path) -> None:
    """Copy the plugin's package under ``target`` with the mutant's snippet replaced."""
    source = package_dir(mutant.plugin)
    copy = target / source.name
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / mutant.path
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(
            f"mutant {mutant.bug!r}: its snippet occurs {text.count(mutant.old)} times in {path}"
        )
    path.write_text(text.replace(mutant.old, mutant.new))


def conformance_passes(plugin: str, shadow: Path | None) -> bool:
    """Whether the plugin's conformance suite passes (with ``shadow`` first on the path)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    if shadow is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(shadow), env.get("PYTHONPATH", "")])
    tests = ROOT / "plugins" / f"peftplug-{plugin}" / "tests" / "test_conformance.py"
    command = [sys.executable, "-m", "pytest", str(tests), "-x", "-q", "-p", "no:cacheprovider"]
    return (
        subprocess.run(command, env=env, cwd=ROOT, capture_output=True, check=False).returncode == 0
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", choices=sorted(CORPUS), action="append")
    parser.add_argument("--list", action="store_true", help="print the corpus and exit")
    args = parser.parse_args(argv)
    rows = []
    for plugin in args.plugin or sorted(CORPUS):
        mutants = CORPUS[plugin]
        if args.list:
            print("\n".join(f"{plugin}: {m.bug}" for m in mutants))
            continue
        if not conformance_passes(plugin, None):
            print(f"{plugin}: the conformance suite fails without a mutant; fix that first")
            return 1
        survivors = []
        for mutant in mutants:
            with tempfile.TemporaryDirectory() as scratch:
                plant(mutant, Path(scratch))
                killed = not conformance_passes(plugin, Path(scratch))
            print(f"{plugin}: {'killed  ' if killed else 'SURVIVED'} {mutant.bug}", flush=True)
            if not killed:
                survivors.append(mutant.bug)
        rows.append((plugin, len(mutants), len(mutants) - len(survivors)))
    if rows:
        print("\n| plugin | mutants | killed | kill rate |\n|---|---|---|---|")
        for plugin, total, killed in rows:
            print(f"| {plugin} | {total} | {killed} | {killed / total:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
