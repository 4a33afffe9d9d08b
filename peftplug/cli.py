"""The ``peftplug`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import platform
import sys
from collections.abc import Sequence

from peftplug.compare import arguments as compare_arguments
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


def _compare(arguments: argparse.Namespace) -> int:
    from pathlib import Path

    from peftplug.compare.model_dirs import check_model_dir
    from peftplug.compare.plan import plan_rows
    from peftplug.compare.prepared_data import prepare_data
    from peftplug.compare.runner import run_compare

    if arguments.latency_repeats < 1:
        raise PeftplugError(
            f"--latency-repeats must be at least 1, got {arguments.latency_repeats}"
        )
    if arguments.shots < 0:
        raise PeftplugError(f"--shots must be 0 or more, got {arguments.shots}")
    workload = compare_arguments.workload_from(
        arguments, arguments.latency_repeats, arguments.shots
    )
    if workload.model is not None:
        check_model_dir(workload.model)
    for note in prepare_data(workload).notes:  # bad data fails here, not in every row
        print(f"data: {note}", flush=True)
    out = Path(arguments.out)
    if out.exists() and not out.is_dir():
        raise PeftplugError(f"--out {out} is a file: name a directory for the reports")
    rows = plan_rows(
        workload,
        out,
        methods=compare_arguments.method_list(arguments.methods),
        overrides=compare_arguments.parse_overrides(arguments.config),
        learning_rates=compare_arguments.parse_learning_rates(arguments.lr),
        baselines=arguments.baselines,
        vs_peft=arguments.vs_peft,
        lr_search=arguments.lr_search,
    )
    run = run_compare(workload, rows, out, arguments.argv)
    if run.rows and all(row["status"] == "failed" for row in run.rows):
        print(
            f"peftplug compare: error: every row failed (see {out}); the first: "
            f"{run.rows[0].get('error')}",
            file=sys.stderr,
        )
        return 1
    return 0


def _train(arguments: argparse.Namespace) -> int:
    from peftplug.compare.table import held_out_text
    from peftplug.compare.train import run_train

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
    from peftplug.compare.export import merge_to_directory

    out = merge_to_directory(arguments.adapter, arguments.out, arguments.model, arguments.task)
    print(f"merged model: {out}")
    return 0


def _export(arguments: argparse.Namespace) -> int:
    from peftplug.compare.export import export

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
    from peftplug.compare.peft_import import import_to_directory

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
    parser = argparse.ArgumentParser(prog="peftplug", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser("plugins", help="list installed plugins and their methods")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(run=_plugins)
    info = commands.add_parser("info", help="versions and the compiled extension's status")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_info)
    compare = commands.add_parser(
        "compare", help="train and measure every installed method side by side"
    )
    compare_arguments.add_compare_arguments(compare)
    compare.set_defaults(run=_compare)
    train = commands.add_parser("train", help="train one method on your data and save the adapter")
    compare_arguments.add_train_arguments(train)
    train.set_defaults(run=_train)
    merge = commands.add_parser("merge", help="fold an adapter into its base; save the full model")
    _add_base_arguments(merge)
    merge.set_defaults(run=_merge)
    export = commands.add_parser("export", help="write an adapter or its merged model elsewhere")
    _add_base_arguments(export)
    export.add_argument(
        "--format",
        choices=compare_arguments.EXPORT_FORMATS,
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``peftplug`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = build_parser().parse_args(argv)
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
