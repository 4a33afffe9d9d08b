"""``peftplug import``: an HF PEFT adapter directory saved as a peftplug adapter."""

from __future__ import annotations

from pathlib import Path

import peftplug
from peftplug.apply import require_state
from peftplug.commands.export_inputs import load_base_model, refuse_non_empty
from peftplug.errors import ConfigError
from peftplug.import_peft import PEFT_BASE_PREFIXES, PEFT_CONFIG, read_peft_adapter
from peftplug.targets import TASK_HEAD_ATTRIBUTES

# PEFT's task types whose base ``load_base_model`` builds
CAUSAL_TASKS = (None, "CAUSAL_LM")
CLASSIFIER_TASK = "SEQ_CLS"


def import_to_directory(
    peft_directory: str | Path, out: str | Path, model: str | None = None, overwrite: bool = False
) -> tuple[str, Path]:
    """Load the base (``model``, else PEFT's ``base_model_name_or_path``), import the PEFT
    adapter into it (``peftplug.import_peft``) and save it to ``out`` (``save_adapter``).

    Returns the method it became and ``out``.
    """
    out = refuse_non_empty(Path(out), overwrite)
    config, tensors = read_peft_adapter(peft_directory)
    task = config.get("task_type")
    if task not in (*CAUSAL_TASKS, CLASSIFIER_TASK):
        raise ConfigError(
            f"the HF PEFT adapter's task_type is {task!r}; peftplug import builds a causal LM "
            f"or a sequence classifier base: load the base yourself and call peftplug.import_peft"
        )
    labels = None
    if task == CLASSIFIER_TASK:
        heads = [f"{p}{h}.weight" for h in TASK_HEAD_ATTRIBUTES for p in PEFT_BASE_PREFIXES]
        rows = [tensors[name].shape[0] for name in heads if name in tensors]
        if not rows:
            raise ConfigError(
                f"the HF PEFT classifier adapter in {peft_directory} holds no task head, so the "
                "number of labels is unknown: save it with the head in modules_to_save"
            )
        labels = int(rows[0])
    recorded = config.get("base_model_name_or_path")
    base, _ = load_base_model(model, recorded, Path(peft_directory) / PEFT_CONFIG, labels)
    imported = peftplug.import_peft(base, peft_directory)
    (applied,) = require_state(imported).methods
    return applied.spec.name, peftplug.save_adapter(imported, out)
