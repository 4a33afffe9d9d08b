"""A throwaway installed distribution with a ``peftplug`` entry point, for plugin-host tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_fake_distribution(
    root: Path, name: str, source: str, entry_point: str | None = None
) -> None:
    """Distribution ``name`` 0.3 in ``root`` (put ``root`` on ``sys.path``): module ``name``
    holding ``source``, registered under ``entry_point`` (default: ``name``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[peftplug]\n{entry_point or name} = {name}\n")
