"""The ``peftplug`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import platform
import sys
from collections.abc import Sequence

from peftplug.plugins import get_host


def _plugins(arguments: argparse.Namespace) -> int:
    host = get_host()
    rows = [info for name, info in sorted(host.plugins.items()) if not name.startswith("peftplug.")]
    if arguments.json:
        print(json.dumps([dataclasses.asdict(info) for info in rows], indent=2))
        return 0
    if not rows:
        print("no plugins installed (pip install peftplug-lora, for example)")
        return 0
    for info in rows:
        status = f"FAILED: {info.error}" if info.error else ", ".join(info.methods)
        print(f"{info.name:<16} {info.distribution} {info.version:<10} {status}")
    return 0


def _info(arguments: argparse.Namespace) -> int:
    import torch
    import transformers

    from peftplug import ops

    report = {
        "peftplug": importlib.metadata.version("peftplug"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda_available": torch.cuda.is_available(),
        "extension": ops.extension_status(),
        "methods": sorted(get_host().methods),
    }
    if arguments.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        print(f"{key:<16} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="peftplug", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser("plugins", help="list installed plugins and their methods")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(run=_plugins)
    info = commands.add_parser("info", help="versions and the compiled extension's status")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``peftplug`` script."""
    arguments = build_parser().parse_args(argv)
    return arguments.run(arguments)


if __name__ == "__main__":
    sys.exit(main())
