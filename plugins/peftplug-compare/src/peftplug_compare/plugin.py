"""peftplug hook implementations for ``peftplug compare``."""

from __future__ import annotations

import argparse

from peftplug import hookimpl


@hookimpl
def peftplug_register_commands(commands: argparse._SubParsersAction) -> None:
    from peftplug_compare.command import add_compare_command

    add_compare_command(commands)
