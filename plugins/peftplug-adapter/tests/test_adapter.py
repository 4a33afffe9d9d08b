"""Bottleneck adapters on tiny BERT, Llama and GPT-2: sizes, placement maths, named adapters."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from peftplug_adapter import AdapterConfig, BottleneckAdapterLayer
from torch import nn
from transformers import PreTrainedModel

import peftplug
from peftplug.blocks import LAYOUTS, BlockLayout
from peftplug.state import peft_state
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)

TINY_MODELS: dict[str, Callable[[], PreTrainedModel]] = {
    "bert": tiny_bert_classifier,
    "llama": tiny_llama,
    "gpt2": tiny_gpt2,
}
SECOND_BLOCK = {
    "bert": "bert.encoder.layer.1",
    "llama": "model.layers.1",
    "gpt2": "transformer.h.1",
}
# written out here rather than imported, so the tests check the layer's choice of function
ACTIVATIONS = {
    "relu": lambda x: x.clamp(min=0),
    "swish": lambda x: x * torch.sigmoid(x),
    "tanh": torch.tanh,
}


def batch_for(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    batch = classification_batch() if model.config.model_type == "bert" else causal_lm_batch()
    return {k: v for k, v in batch.items() if k != "labels"}


def logits(model: PreTrainedModel) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch_for(model)).logits


def adapt(
    model: PreTrainedModel, adapter_name: str = "default", **options: object
) -> PreTrainedModel:
    return peftplug.apply(model, ["adapter"], {"adapter": options}, adapter_name=adapter_name)


def randomize_adapters(model: nn.Module, seed: int = 1, adapter_name: str = "default") -> None:
    """Give an adapter (up-projections included) non-zero weights, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapter_layers(model):
            for parameter in layer.adapter_parameters(adapter_name):
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))


def adapter_layers(model: nn.Module) -> list[BottleneckAdapterLayer]:
    return [m for m in model.modules() if isinstance(m, BottleneckAdapterLayer)]


def pre_hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) for m in model.modules())


# ------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("family", TINY_MODELS)
@pytest.mark.parametrize(
    ("placement", "adapted_sublayers"), [("houlsby", 2), ("pfeiffer", 1), ("parallel", 1)]
)
def test_each_block_gains_two_projections_with_biases_per_adapted_sublayer(
    family: str, placement: str, adapted_sublayers: int
) -> None:
    model = TINY_MODELS[family]()
    before = sum(p.numel() for p in model.parameters())
    adapt(model, placement=placement, reduction_factor=4, train_head=False)
    d, blocks = model.config.hidden_size, model.config.num_hidden_layers
    m = d // 4
    per_block = adapted_sublayers * (2 * d * m + d + m)
    assert peftplug.trainable_parameters(model).trainable == blocks * per_block
    assert sum(p.numel() for p in model.parameters()) - before == blocks * per_block


def test_bottleneck_size_sets_the_width_directly_and_the_head_trains_by_default() -> None:
    model = adapt(tiny_bert_classifier(), placement="pfeiffer", bottleneck_size=3)
    d, blocks = model.config.hidden_size, model.config.num_hidden_layers
    head = sum(p.numel() for p in model.classifier.modules_to_save["default"].parameters())
    assert peftplug.trainable_parameters(model).trainable == blocks * (2 * d * 3 + d + 3) + head


def test_layer_norm_tuning_adds_the_block_norms() -> None:
    model = adapt(tiny_llama(), placement="pfeiffer", bottleneck_size=4, train_layer_norms=True)
    d, blocks = model.config.hidden_size, model.config.num_hidden_layers
    norms = blocks * 2 * d  # Llama's two RMSNorm weights per block
    assert peftplug.trainable_parameters(model).trainable == blocks * (2 * d * 4 + d + 4) + norms
    norm = model.model.layers[1].post_attention_layernorm
    assert norm.modules_to_save["default"].weight.requires_grad
    assert not norm.base_layer.weight.requires_grad
    assert not model.model.norm.weight.requires_grad


# -------------------------------------------------------------------- placements


@pytest.mark.parametrize("family", TINY_MODELS)
@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer", "parallel"])
def test_the_model_starts_exactly_where_the_base_model_was(family: str, placement: str) -> None:
    expected = logits(TINY_MODELS[family]())
    everywhere = ["attention", "feed_forward"]
    model = adapt(TINY_MODELS[family](), placement=placement, sublayers=everywhere)
    torch.testing.assert_close(logits(model), expected, rtol=0, atol=0)


def _expected_update(
    layer: BottleneckAdapterLayer, source: torch.Tensor, activation: str, scaling: float
) -> torch.Tensor:
    down, up = layer.adapter_down["default"], layer.adapter_up["default"]
    hidden = ACTIVATIONS[activation](source @ down.weight.T + down.bias)
    return scaling * (hidden @ up.weight.T + up.bias)


def record_input(module: nn.Module, store: dict[str, torch.Tensor], key: str) -> None:
    def record(_: nn.Module, args: tuple, kwargs: dict) -> None:
        store[key] = args[0] if args else kwargs["hidden_states"]

    module.register_forward_pre_hook(record, with_kwargs=True)


def record_output(module: nn.Module, store: dict[str, torch.Tensor], key: str) -> None:
    module.register_forward_hook(lambda _, args, output: store.__setitem__(key, output))


@pytest.mark.parametrize(
    ("family", "sublayer_input", "sublayer_output", "placement", "activation", "scaling"),
    [
        # sequential: h + s * up(f(down(h))) on the sub-layer output h
        ("llama", None, "self_attn.o_proj", "houlsby", "swish", 1.0),
        ("gpt2", None, "mlp.c_proj", "pfeiffer", "relu", 1.0),
        # parallel: h + s * up(f(down(x))) with x the sub-layer input
        ("bert", "intermediate", "output.dense", "parallel", "relu", 4.0),
        ("llama", "mlp", "mlp", "parallel", "tanh", 2.5),
        ("gpt2", "attn", "attn.c_proj", "parallel", "relu", 4.0),
    ],
)
def test_adapter_output_matches_the_formula(
    family: str,
    sublayer_input: str | None,
    sublayer_output: str,
    placement: str,
    activation: str,
    scaling: float,
) -> None:
    model = TINY_MODELS[family]()
    block = model.get_submodule(SECOND_BLOCK[family])
    sublayer = "attention" if "attn" in sublayer_output else "feed_forward"
    options = {"placement": placement, "non_linearity": activation, "sublayers": [sublayer]}
    if placement == "parallel":
        options["scaling"] = scaling
    adapt(model, **options)
    randomize_adapters(model)
    layer = block.get_submodule(sublayer_output)
    assert isinstance(layer, BottleneckAdapterLayer)
    seen: dict[str, torch.Tensor] = {}
    record_output(layer.base_layer, seen, "base_output")
    record_output(layer, seen, "adapted_output")
    if sublayer_input is not None:
        record_input(block.get_submodule(sublayer_input), seen, "input")
    logits(model)
    source = seen["input"] if placement == "parallel" else seen["base_output"]
    expected = seen["base_output"] + _expected_update(layer, source, activation, scaling)
    torch.testing.assert_close(seen["adapted_output"], expected)
    assert not torch.allclose(seen["adapted_output"], seen["base_output"])


def test_parallel_adapter_survives_gradient_checkpointing() -> None:
    """Recomputation re-runs the input hook, so the gradients are those of a plain run."""
    grads = []
    for checkpointing in (False, True):
        model = adapt(tiny_llama(), placement="parallel", sublayers=["attention", "feed_forward"])
        randomize_adapters(model)
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
            assert model.is_activation_checkpointing
        model.train()
        model.config.use_cache = False
        model(**causal_lm_batch()).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name])


# ------------------------------------------------------------------------ config


def test_unset_options_take_adapterhub_defaults_for_the_placement() -> None:
    assert AdapterConfig() == AdapterConfig(
        placement="houlsby", reduction_factor=16, non_linearity="swish", scaling=1.0,
        sublayers=["attention", "feed_forward"],
    )
    pfeiffer = AdapterConfig(placement="pfeiffer")
    assert (pfeiffer.reduction_factor, pfeiffer.non_linearity, pfeiffer.sublayers) == (
        16, "relu", ["feed_forward"])
    parallel = AdapterConfig(placement="parallel")
    assert (parallel.reduction_factor, parallel.non_linearity, parallel.scaling) == (2, "relu", 4.0)
    assert AdapterConfig(bottleneck_size=8).reduction_factor is None


def test_both_widths_are_refused_with_the_fix() -> None:
    with pytest.raises(peftplug.ConfigError, match="both set the bottleneck width.*give only one"):
        AdapterConfig.from_dict({"reduction_factor": 8, "bottleneck_size": 4})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"reduction_factor": 0}, "'reduction_factor' must be positive"),
        ({"bottleneck_size": 0}, "'bottleneck_size' must be a positive width"),
        ({"scaling": -1.0}, "'scaling' must be positive"),
        ({"sublayers": ["feed_forward", "feed_forward"]}, "'sublayers' must name"),
        ({"placement": "sideways"}, "must be one of 'houlsby', 'pfeiffer', 'parallel'"),
        ({"non_linearity": "relu6"}, "must be one of 'relu'"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(peftplug.ConfigError, match=message):
        AdapterConfig.from_dict(options)


def test_a_reduction_too_large_for_the_model_fails_before_touching_it() -> None:
    model = tiny_bert_classifier()
    with pytest.raises(peftplug.ConfigError, match="leaves no bottleneck for hidden size 32"):
        adapt(model, reduction_factor=64)
    assert peft_state(model) is None and not adapter_layers(model)


# ---------------------------------------------------------- merge, names, errors


def test_merge_is_refused_and_changes_nothing() -> None:
    model = adapt(tiny_bert_classifier())
    randomize_adapters(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = logits(model)
    with pytest.raises(peftplug.NotMergeableError, match="non-linearity.*cannot be folded"):
        peftplug.merge(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not layer.merged_adapters for layer in adapter_layers(model))
    torch.testing.assert_close(logits(model), expected, rtol=0, atol=0)


def test_named_adapters_switch_delete_and_unload_like_lora() -> None:
    base = logits(tiny_llama())
    model = adapt(tiny_llama(), placement="houlsby")
    randomize_adapters(model, seed=1)
    first = logits(model)
    adapt(model, "second", placement="parallel", sublayers=["attention", "feed_forward"])
    randomize_adapters(model, seed=2, adapter_name="second")
    torch.testing.assert_close(logits(model), first, rtol=0, atol=0)  # "default" stays active

    peftplug.set_active_adapter(model, "second")
    second = logits(model)
    assert not torch.allclose(second, first) and not torch.allclose(second, base)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".second." in n for n in trainable)
    with peftplug.disable_adapters(model):
        torch.testing.assert_close(logits(model), base, rtol=0, atol=0)

    peftplug.delete_adapter(model, "default")
    torch.testing.assert_close(logits(model), second, rtol=0, atol=0)
    assert all(layer.adapter_names == ["second"] for layer in adapter_layers(model))
    peftplug.unload(model)
    assert not adapter_layers(model) and pre_hook_count(model) == 0
    torch.testing.assert_close(logits(model), base, rtol=0, atol=0)


def test_a_failure_halfway_through_the_blocks_leaves_the_model_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = BlockLayout("attn", "attn.c_proj", "mlp", "mlp.no_such_module")
    monkeypatch.setitem(LAYOUTS, "gpt2", broken)
    model = tiny_gpt2()
    expected = logits(tiny_gpt2())
    with pytest.raises(AttributeError, match="no_such_module"):
        adapt(model, placement="parallel", sublayers=["attention", "feed_forward"])
    assert peft_state(model) is None and not adapter_layers(model) and pre_hook_count(model) == 0
    torch.testing.assert_close(logits(model), expected, rtol=0, atol=0)


def test_a_family_without_a_layout_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(LAYOUTS, "gpt2")
    model = tiny_gpt2()
    with pytest.raises(peftplug.PeftplugError, match="register_layout"):
        adapt(model)
    assert peft_state(model) is None and not adapter_layers(model)
