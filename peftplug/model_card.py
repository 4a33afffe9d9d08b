"""The ``README.md`` model card ``save_adapter`` writes beside an adapter, in the Hub's shape."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

CARD_NAME = "README.md"
FRONT_MATTER = "---\nlibrary_name: peftplug\n"


def is_model_card(data: bytes) -> bool:
    """Whether a file's content is a card ``model_card`` wrote (so a save may replace it)."""
    return data.startswith(FRONT_MATTER.encode())


def model_card(config: Mapping[str, Any], trainable: int, metrics: Mapping[str, Any] | None) -> str:
    """YAML front matter, then the methods and options, the base, trainable count and metrics.

    ``config`` is the adapter's ``adapter_config.json`` content.
    """
    base = config["base_model"]
    methods = config["methods"]
    names = list(dict.fromkeys(m["method"] for m in methods))
    architectures = ", ".join(base.get("architectures") or []) or "-"
    described = f"{base.get('source')}; model_type `{base.get('model_type')}`, {architectures}"
    front: dict[str, Any] = {"library_name": "peftplug"}
    if base.get("source") == "hub":
        front["base_model"] = base["name_or_path"]
    front["tags"] = ["peftplug", *names]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# peftplug adapter: {', '.join(names)}",
        "",
        f"- base model: `{base['name_or_path']}` ({described})",
        f"- trainable parameters: {trainable:,}",
        f"- peftplug {config['peftplug_version']}, active adapter `{config['active_adapter']}`",
        "",
        "## Methods and options",
        "",
    ]
    for record in methods:
        origin = " ".join(filter(None, [record.get("distribution"), record.get("version")]))
        lines += [
            f"### {record['method']} (adapter `{record['adapter_name']}`; {origin or 'built-in'})",
            "",
            "```json",
            json.dumps(record["config"], indent=2, sort_keys=True),
            "```",
            "",
        ]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_value(value)} |" for name, value in metrics.items()]
        lines.append("")
    lines += [
        "## Loading",
        "",
        "```python",
        "import peftplug",
        "model = peftplug.load_adapter(base_model, adapter_directory_or_hub_id)",
        "```",
    ]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return str(value)
