"""HF PEFT's implementation of a method, with the same settings, as an extra row (``--vs-peft``).

Only methods PEFT really has are translated: LoRA, prompt tuning, P-tuning and prefix tuning.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from torch import nn
from transformers import Trainer

from peftplug.compare.lr_search import search_row
from peftplug.compare.measure import adapter_bytes, parameter_count
from peftplug.compare.options import RowSpec, Workload
from peftplug.compare.rows import latency_figures, parameter_figures
from peftplug.compare.tasks import LoadedTask, load_task
from peftplug.compare.training import build_trainer, train_measured, training_arguments
from peftplug.errors import ConfigError
from peftplug.plugins import get_host
from peftplug.targets import DEFAULT_ATTENTION_TARGETS, task_head_names

PEFT_METHODS: tuple[str, ...] = ("lora", "prompt", "ptuning", "prefix")
MERGEABLE: tuple[str, ...] = ("lora",)


def _task_type(task: LoadedTask) -> str:
    return "SEQ_CLS" if task.metric == "accuracy" else "CAUSAL_LM"


def lora_config(options: dict[str, Any], model: nn.Module, task_type: str) -> Any:
    """PEFT's ``LoraConfig`` for peftplug LoRA options on ``model``."""
    import peft

    targets = options.get("target_modules")
    if targets is None:
        targets = DEFAULT_ATTENTION_TARGETS.get(model.config.model_type)
    saved = options.get("modules_to_save", "auto")
    return peft.LoraConfig(
        task_type=task_type,
        r=options["r"],
        lora_alpha=options["alpha"],
        lora_dropout=options["dropout"],
        use_rslora=options["use_rslora"],
        bias=options["bias"],
        target_modules=targets,
        exclude_modules=options.get("exclude_modules"),
        modules_to_save=task_head_names(model) if saved == "auto" else saved,
    )


def _lora(options: dict[str, Any], task: LoadedTask) -> Any:
    return lora_config(options, task.model, _task_type(task))


def _prompt(options: dict[str, Any], task: LoadedTask) -> Any:
    import peft

    init = {"vocab": "SAMPLE_VOCAB", "text": "TEXT", "random": "RANDOM"}[options["init"]]
    return peft.PromptTuningConfig(
        task_type=_task_type(task),
        num_virtual_tokens=options["num_virtual_tokens"],
        prompt_tuning_init=init,
        prompt_tuning_init_text=options.get("init_text"),
        tokenizer_name_or_path=options.get("tokenizer_name_or_path") or task.model.name_or_path,
    )


def _ptuning(options: dict[str, Any], task: LoadedTask) -> Any:
    import peft

    return peft.PromptEncoderConfig(
        task_type=_task_type(task),
        num_virtual_tokens=options["num_virtual_tokens"],
        encoder_reparameterization_type=options["encoder"].upper(),
        encoder_hidden_size=options["encoder_hidden_size"],
    )


def _prefix(options: dict[str, Any], task: LoadedTask) -> Any:
    import peft

    return peft.PrefixTuningConfig(
        task_type=_task_type(task),
        num_virtual_tokens=options["num_virtual_tokens"],
        prefix_projection=options.get("projection", False),
        encoder_hidden_size=options.get("encoder_hidden_size", task.model.config.hidden_size),
    )


TRANSLATIONS: dict[str, Callable[[dict[str, Any], LoadedTask], Any]] = {
    "lora": _lora,
    "prompt": _prompt,
    "ptuning": _ptuning,
    "prefix": _prefix,
}


def _merge(model: nn.Module, method: str) -> Callable[[], str | None]:
    def merge() -> str | None:
        if method not in MERGEABLE:
            return f"PEFT cannot merge {method}: its virtual tokens are extra inputs"
        model.merge_adapter()
        return None

    return merge


def run_peft(spec: RowSpec) -> dict[str, Any]:
    """Train HF PEFT's version of ``spec.method`` with the options peftplug resolved for it."""
    import peft

    assert spec.method and spec.learning_rate and spec.adapter_dir, "the runner sets these"
    if spec.method not in TRANSLATIONS:
        raise ConfigError(
            f"HF PEFT has no {spec.method!r}; --vs-peft adds rows for {', '.join(PEFT_METHODS)}"
        )
    options = get_host().method(spec.method).parse_config(spec.options).to_dict()
    task = load_task(spec.workload)
    base = parameter_count(task.model)

    def trainer_for(run: LoadedTask, rate: float, scratch: str, workload: Workload) -> Trainer:
        run.model = peft.get_peft_model(run.model, TRANSLATIONS[spec.method](options, run))
        args = training_arguments(workload, scratch, rate)
        return build_trainer(run, args, f"{spec.label} @ {rate:.2g}", peftplug_methods=False)

    search = search_row(spec, task, trainer_for) if spec.search_learning_rate else None
    learning_rate = search.chosen if search else spec.learning_rate
    with tempfile.TemporaryDirectory() as scratch:
        trainer = trainer_for(task, learning_rate, scratch, spec.workload)
        model = task.model
        parameters = parameter_figures(model, base)
        cost = train_measured(trainer)
    del trainer
    metric = task.evaluate(model)
    model.save_pretrained(spec.adapter_dir)
    prompt_learning = model.active_peft_config.is_prompt_learning
    inference = latency_figures(
        task,
        model.eval(),
        None if prompt_learning else model.disable_adapter,
        _merge(model, spec.method),
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
        "options": options,
        "learning_rate": learning_rate,
        "lr_search": search.figures() if search else None,
        "parameters": parameters,
        "storage": {
            "adapter_bytes": adapter_bytes(spec.adapter_dir),
            "adapter_dir": spec.adapter_dir,
        },
        "training": cost.figures(),
        "metric": metric,
        "inference": inference,
    }
