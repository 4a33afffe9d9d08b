"""HF PEFT's implementation of a method, with the same settings, as an extra row (``--vs-peft``).

Methods whose ``MethodSpec`` names a ``peft_type`` get one; their plugin translates the options
(``peftplug_peft_training_config``), so nothing here knows a method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from transformers import Trainer

from peftplug.config import MethodConfig
from peftplug.errors import ConfigError
from peftplug.plugins import get_host
from peftplug.workload.measure import adapter_bytes, parameter_count
from peftplug.workload.options import Workload
from peftplug.workload.tasks import LoadedTask, load_task
from peftplug.workload.training import build_trainer, training_arguments
from peftplug_compare.rows import latency_figures, train_row
from peftplug_compare.spec import RowSpec


def _task_type(task: LoadedTask) -> str:
    return "SEQ_CLS" if task.metric == "accuracy" else "CAUSAL_LM"


def peft_config(config: MethodConfig, task: LoadedTask) -> Any:
    """PEFT's config that trains the method of ``config`` on the task's plain model.

    The method's plugin gives the fields (``peftplug_peft_training_config``); the task type is
    the task's.
    """
    import peft

    fields = get_host().hook.peftplug_peft_training_config(model=task.model, config=config)
    if fields is None:
        raise ConfigError(f"method {config.method!r} gives no HF PEFT config to train it with")
    return peft.get_peft_config({**fields, "task_type": _task_type(task)})


def _merge(model: nn.Module) -> Callable[[], str | None]:
    def merge() -> str | None:
        if model.active_peft_config.is_prompt_learning:
            return "PEFT cannot merge prompt learning: its virtual tokens are extra inputs"
        model.merge_adapter()
        return None

    return merge


def run_peft(spec: RowSpec) -> dict[str, Any]:
    """Train HF PEFT's version of ``spec.method`` with the options peftplug resolved for it."""
    import peft

    assert spec.method and spec.learning_rate and spec.adapter_dir, "the runner sets these"
    config = get_host().method(spec.method).parse_config(spec.options)
    task = load_task(spec.workload)
    base = parameter_count(task.model)

    def trainer_for(run: LoadedTask, rate: float, scratch: str, workload: Workload) -> Trainer:
        run.model = peft.get_peft_model(run.model, peft_config(config, run))
        args = training_arguments(workload, scratch, rate)
        return build_trainer(run, args, f"{spec.label} @ {rate:.2g}", peftplug_methods=False)

    trained = train_row(spec, task, trainer_for, base)
    model = trained.model
    metric = task.evaluate(model)
    model.save_pretrained(spec.adapter_dir)
    prompt_learning = model.active_peft_config.is_prompt_learning
    inference = latency_figures(
        task,
        model.eval(),
        None if prompt_learning else model.disable_adapter,
        _merge(model),
        spec.workload,
        # PEFT's disable_adapter fails for prompt methods on classifiers; their base is untouched
        base_model=model.get_base_model() if prompt_learning else None,
    )
    return {
        "model": task.model_name,
        "data": task.data_name,
        "train_examples": len(task.train),
        "eval_examples": len(task.test),
        "distribution": "peft",
        "version": peft.__version__,
        "options": config.to_dict(),
        **trained.figures(),
        "storage": {
            "adapter_bytes": adapter_bytes(spec.adapter_dir),
            "adapter_dir": spec.adapter_dir,
        },
        "metric": metric,
        "inference": inference,
    }
