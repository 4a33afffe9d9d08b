"""The ``peftplug`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import platform
import sys
from collections.abc import Sequence

from peftplug.commands import arguments as command_arguments
from peftplug.errors import PeftplugError
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
        commands = [f"command {name}" for name in arguments.plugin_commands.get(info.name, [])]
        status = f"FAILED: {info.error}" if info.error else ", ".join([*info.methods, *commands])
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


def _train(arguments: argparse.Namespace) -> int:
    from peftplug.commands.train import held_out_text, run_train

    figures = run_train(arguments)
    metric = held_out_text(figures["metric"])
    training = figures["training"]
    print(
        f"trained {figures['method']} ({figures['trainable']:,} trainable parameters) for "
        f"{training['steps']} steps in {training['seconds']:.1f} s; held-out {metric}\n"
        f"adapter: {figures['adapter']}"
    )
    return 0


def _merge(arguments: argparse.Namespace) -> int:
    from peftplug.commands.export import merge_to_directory

    out = merge_to_directory(arguments.adapter, arguments.out, arguments.model, arguments.task)
    print(f"merged model: {out}")
    return 0


def _export(arguments: argparse.Namespace) -> int:
    from peftplug.commands.export import export

    out = export(
        arguments.adapter,
        arguments.out,
        arguments.format,
        arguments.model,
        arguments.task,
        arguments.overwrite,
    )
    print(f"exported ({arguments.format}): {out}")
    return 0


def _import(arguments: argparse.Namespace) -> int:
    from peftplug.commands.peft_import import import_to_directory

    method, out = import_to_directory(
        arguments.peft_adapter, arguments.out, arguments.model, arguments.overwrite
    )
    print(f"imported as {method}: {out}")
    return 0


def _add_base_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "adapter", help="an adapter directory (peftplug.save_adapter, peftplug train)"
    )
    parser.add_argument("--out", required=True, help="a new (or empty) directory to write")
    parser.add_argument("--model", help="the base model directory (default: the one recorded)")
    parser.add_argument(
        "--task",
        choices=("classification", "causal-lm"),
        help="default: classification when the adapter saved a task head",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="peftplug",
        description=__doc__,
        epilog="Comparing every installed method side by side is `peftplug compare`, from the "
        "peftplug-compare distribution (pip install peftplug-compare).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser("plugins", help="list installed plugins and their methods")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(run=_plugins)
    info = commands.add_parser("info", help="versions and the compiled extension's status")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_info)
    train = commands.add_parser("train", help="train one method on your data and save the adapter")
    command_arguments.add_train_arguments(train)
    train.set_defaults(run=_train)
    merge = commands.add_parser("merge", help="fold an adapter into its base; save the full model")
    _add_base_arguments(merge)
    merge.set_defaults(run=_merge)
    export = commands.add_parser("export", help="write an adapter or its merged model elsewhere")
    _add_base_arguments(export)
    export.add_argument(
        "--format",
        choices=command_arguments.EXPORT_FORMATS,
        default="peftplug",
        help="peftplug: the verified adapter files; peft: HF PEFT's layout (methods with a "
        "PEFT equivalent); merged: a full model",
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the adapter in a non-empty --out (peftplug and peft formats)",
    )
    export.set_defaults(run=_export)
    imports = commands.add_parser(
        "import", help="turn an HF PEFT adapter into a peftplug adapter (LoRA, prompt tuning ...)"
    )
    imports.add_argument("peft_adapter", help="a directory written by PeftModel.save_pretrained")
    imports.add_argument("--out", required=True, help="a new (or empty) directory to write")
    imports.add_argument(
        "--model", help="the base model directory (default: PEFT's base_model_name_or_path)"
    )
    imports.add_argument(
        "--overwrite", action="store_true", help="replace the adapter in a non-empty --out"
    )
    imports.set_defaults(run=_import)
    parser.set_defaults(plugin_commands=_add_plugin_commands(commands))
    return parser


# Commands that ship in their own distribution: named here only to tell users what to install.
COMMAND_DISTRIBUTIONS = {"compare": "peftplug-compare"}


def _add_plugin_commands(commands: argparse._SubParsersAction) -> dict[str, list[str]]:
    """Each plugin's ``peftplug_register_commands``: the names each added.

    A plugin whose registration fails is reported on stderr and its commands are left out.
    """
    added_by: dict[str, list[str]] = {}
    hook = get_host().hook.peftplug_register_commands
    for implementation in hook.get_hookimpls():
        before = set(commands.choices)
        try:
            implementation.function(commands=commands)
            added_by[implementation.plugin_name] = sorted(set(commands.choices) - before)
        except Exception as error:  # a broken plugin must not take the whole CLI down
            added = set(commands.choices) - before
            for name in added:
                del commands.choices[name]
            commands._choices_actions = [
                action for action in commands._choices_actions if action.dest not in added
            ]
            print(
                f"peftplug: plugin {implementation.plugin_name!r} could not add its commands "
                f"({type(error).__name__}: {error}); the other commands work",
                file=sys.stderr,
            )
    return added_by


def _missing_command(argv: Sequence[str], parser: argparse.ArgumentParser) -> str | None:
    """The install hint when ``argv`` asks for a command whose distribution is not installed."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    name = next((word for word in argv if not word.startswith("-")), None)
    if name in COMMAND_DISTRIBUTIONS and name not in commands.choices:
        return (
            f"peftplug: error: '{name}' comes with the {COMMAND_DISTRIBUTIONS[name]} "
            f"distribution, which is not installed (or is disabled by "
            f"PEFTPLUG_DISABLE_PLUGINS/PEFTPLUG_LOAD_PLUGINS): pip install "
            f"{COMMAND_DISTRIBUTIONS[name]}"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``peftplug`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    missing = _missing_command(argv, parser)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    arguments = parser.parse_args(argv)
    arguments.argv = argv
    try:
        return arguments.run(arguments)
    except PeftplugError as error:
        print(f"peftplug {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # finished work is kept: compare saved its rows, saves are atomic
        print(f"peftplug {arguments.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
