"""Which rows a comparison runs, with what learning rate and options, in what order."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peftplug.errors import ConfigError
from peftplug.plugins import get_host
from peftplug.workload.options import Workload
from peftplug_compare.lr_search import search_off_reason
from peftplug_compare.spec import RowSpec

UNTRAINED_LABEL = "untrained"


def plan_rows(
    workload: Workload,
    out: Path,
    *,
    methods: Sequence[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    learning_rates: Mapping[str, float] | None = None,
    baselines: bool = True,
    vs_peft: bool = False,
    lr_search: bool = True,
    seeds: int = 1,
) -> list[RowSpec]:
    """The untrained model, the baselines, each chosen method and (with ``vs_peft``) PEFT's rows.

    Every method takes its plugin's comparison defaults (``MethodSpec.comparison``), then the
    user's ``overrides`` and ``learning_rates``; names that match no chosen method are errors.
    With ``lr_search`` a method's rate is searched around its default (``lr_search.py``) unless
    ``learning_rates`` fixes it or the budget is too short (``search_off_reason``). With
    ``seeds`` above 1 every row runs that many times, under seeds ``workload.seed`` onwards
    (``seeds.by_label`` shows them as one).
    """
    host = get_host()
    installed = sorted(host.methods)
    chosen = list(methods) if methods else installed
    for name in chosen:
        host.method(name)  # a typo is an error now, naming the installed methods
    is_baseline = {name: host.methods[name].comparison_defaults.baseline for name in installed}
    if baselines:
        chosen = [m for m in installed if is_baseline[m] and m not in chosen] + chosen
    chosen = sorted(dict.fromkeys(chosen), key=lambda name: (not is_baseline[name], name))
    for kind, names in (("--config", overrides or {}), ("--lr", learning_rates or {})):
        stray = sorted(set(names) - set(chosen))
        if stray:
            raise ConfigError(
                f"{kind} names {', '.join(map(repr, stray))}, which this comparison does not "
                f"run (methods: {', '.join(chosen)}); add it to --methods or fix the name"
            )
    rows = [RowSpec(UNTRAINED_LABEL, "untrained", workload)]
    if workload.task == "causal-lm" and workload.shots > 0:
        rows.append(RowSpec(f"{workload.shots}-shot in context", "in-context", workload))
    for name in chosen:
        defaults = host.method(name).comparison_defaults
        options = {**defaults.options, **(overrides or {}).get(name, {})}
        learning_rate = (learning_rates or {}).get(name, defaults.learning_rate)
        search = (
            lr_search
            and name not in (learning_rates or {})
            and search_off_reason(workload.steps) is None
        )
        adapters = out / "adapters"
        rows.append(
            RowSpec(
                name, "method", workload, name, options, learning_rate, str(adapters / name), search
            )
        )
        if vs_peft and host.method(name).peft_type is not None:
            label = f"{name} (HF PEFT)"
            rows.append(
                RowSpec(
                    label,
                    "peft",
                    workload,
                    name,
                    options,
                    learning_rate,
                    str(adapters / f"peft-{name}"),
                    search,
                )
            )
    return [run for row in rows for run in _under_seeds(row, seeds)]


def _under_seeds(row: RowSpec, seeds: int) -> list[RowSpec]:
    """The row once per seed; adapters of seeds after the first in directories of their own."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    runs = [row]
    for offset in range(1, seeds):
        seed = row.workload.seed + offset
        adapter_dir = f"{row.adapter_dir}-seed{seed}" if row.adapter_dir else None
        workload = dataclasses.replace(row.workload, seed=seed)
        runs.append(dataclasses.replace(row, workload=workload, adapter_dir=adapter_dir))
    return runs
