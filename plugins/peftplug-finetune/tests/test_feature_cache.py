"""head with cache_features: the frozen backbone runs once per input row, outputs unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from peftplug_finetune import feature_cache
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Trainer

import peftplug
from peftplug.testing.tiny_models import classification_batch, tiny_bert_classifier, tiny_llama

CACHED = {"head": {"cache_features": True}}
# Where the two sides run the backbone differently (other batch shapes or padding, another K/V
# layout), outputs agree only up to float32 rounding: unit roundoff 2**-24 per rounding on the
# longest path to a logit. In tiny BERT (2 layers, width 32, FFN 64, 12 positions, head dim 8)
# that path is about 800 roundings: per layer the sums over the width for Q/K/V, the attention
# output and the FFN input (32 each), two LayerNorms (mean and variance, 4 x 32), head dim 8,
# positions (softmax sum and P @ V, 2 x 12) and FFN width 64; then the embedding LayerNorm, the
# pooler and the classifier (128). Tiny Llama's path is shorter (about 550).
ROUNDING = 800 * 2**-24


def batches(count: int = 3) -> list[dict[str, torch.Tensor]]:
    return [classification_batch(seed=seed) for seed in range(count)]


@contextmanager
def counting_rows(module: nn.Module) -> Iterator[list[int]]:
    """Records the batch size of every call that really runs ``module``."""
    rows: list[int] = []
    handle = module.register_forward_hook(lambda _m, _args, out: rows.append(out.shape[0]))
    try:
        yield rows
    finally:
        handle.remove()


def assert_close_up_to_rounding(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Within ROUNDING of each value, and of the largest one (the scale of the terms summed)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=ROUNDING, atol=ROUNDING * scale)


def logits_of(
    model: nn.Module, data: list[dict[str, torch.Tensor]], seed: int = 0
) -> list[torch.Tensor]:
    torch.manual_seed(seed)  # the same dropout masks in the head on every pass
    with torch.no_grad():
        return [model(**batch).logits for batch in data]


def test_a_second_pass_does_not_run_the_backbone_and_gives_identical_outputs() -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["head"], CACHED).train()
    data = batches()
    with counting_rows(model.bert.embeddings) as first_rows:
        first = logits_of(model, data)
    with counting_rows(model.bert.embeddings) as second_rows:
        second = logits_of(model, data)
    assert sum(first_rows) == 12 and second_rows == []
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    stats = feature_cache(model).stats
    assert (stats.misses, stats.hits, stats.bypassed_calls) == (12, 12, 0)


def test_cached_outputs_equal_the_uncached_backbone_in_eval_mode() -> None:
    cached = peftplug.apply(tiny_bert_classifier(), ["head"], CACHED).eval()
    plain = peftplug.apply(tiny_bert_classifier(), ["head"]).eval()
    data = batches()
    expected = logits_of(plain, data)
    for _ in range(2):
        for a, b in zip(logits_of(cached, data), expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_backbone_runs_without_dropout_or_gradients_even_in_training_mode() -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["head"], CACHED).train()
    batch = {k: v for k, v in classification_batch().items() if k != "labels"}
    reference = tiny_bert_classifier().eval().bert(**batch).pooler_output
    output = model.bert(**batch).pooler_output
    torch.testing.assert_close(output, reference, rtol=0, atol=0)
    assert not output.requires_grad
    assert all(module.training for module in model.bert.modules())


def test_rows_are_found_in_any_order_and_only_new_rows_run() -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["head"], CACHED).eval()
    batch = {k: v for k, v in classification_batch(batch=4).items() if k != "labels"}
    expected = model.bert(**batch).last_hidden_state
    order = torch.tensor([2, 0, 3, 1])
    with counting_rows(model.bert.embeddings) as rows:
        shuffled = model.bert(**{k: v[order] for k, v in batch.items()}).last_hidden_state
    assert rows == []
    torch.testing.assert_close(shuffled, expected[order], rtol=0, atol=0)
    fresh = classification_batch(batch=4, seed=7)
    with counting_rows(model.bert.embeddings) as rows:
        model.bert(**{k: torch.cat([batch[k][:2], fresh[k][:2]]) for k in batch})
    assert rows == [2]


def test_memory_stays_within_the_bound_and_extra_rows_are_computed() -> None:
    model = tiny_bert_classifier()
    peftplug.apply(model, ["head"], {"head": {"cache_features": True, "cache_max_mb": 0.01}})
    data = batches(4)
    expected = logits_of(peftplug.apply(tiny_bert_classifier(), ["head"]).eval(), data)
    model.eval()
    logits_of(model, data)
    cache = feature_cache(model)
    row_bytes = cache.nbytes // len(cache)
    assert 0 < len(cache) < 16 and cache.nbytes <= 0.01 * 2**20 < cache.nbytes + row_bytes
    with counting_rows(model.bert.embeddings) as rows:
        for a, b in zip(logits_of(model, data), expected, strict=True):
            # rows the cache lacks run as a smaller batch (without the padded row: no mask)
            assert_close_up_to_rounding(a, b)
    assert sum(rows) == 16 - len(cache)


def test_new_backbone_weights_empty_the_cache() -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["head"], CACHED).eval()
    data = batches(1)
    logits_of(model, data)
    other = tiny_bert_classifier(seed=1)
    model.bert.load_state_dict(other.bert.state_dict())
    other.classifier.load_state_dict(model.classifier.modules_to_save["default"].state_dict())
    torch.testing.assert_close(logits_of(model, data)[0], logits_of(other, data)[0], rtol=0, atol=0)


def test_a_backbone_parameter_that_starts_training_is_refused() -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["head"], CACHED)
    model.bert.pooler.dense.weight.requires_grad_(True)
    with pytest.raises(peftplug.PeftplugError, match="pooler.dense.weight.*now trains"):
        logits_of(model, batches(1))


def test_unload_takes_the_cache_out() -> None:
    model = peftplug.apply(tiny_bert_classifier(), ["head"], CACHED)
    assert "forward" in model.bert.__dict__
    peftplug.unload(model)
    assert "forward" not in model.bert.__dict__ and feature_cache(model) is None


def test_a_tied_output_layer_trains_a_copy_so_the_backbone_stays_cacheable() -> None:
    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    peftplug.apply(model, ["head"], {"head": {**CACHED["head"], "train_output_layer": True}})
    assert "forward" in model.model.__dict__
    assert not model.model.embed_tokens.weight.requires_grad
    assert model.lm_head.modules_to_save["default"].weight.requires_grad


def test_causal_lm_rows_are_cached_and_generation_bypasses_the_cache() -> None:
    config = {"head": {"train_output_layer": True, "cache_features": True}}
    model = peftplug.apply(tiny_llama(), ["head"], config).eval()
    plain = tiny_llama()
    input_ids = torch.randint(1, 128, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _ in range(2):
            expected = plain(input_ids).logits
            # plain copies K/V into its generation cache; the cached backbone runs without one
            assert_close_up_to_rounding(model(input_ids).logits, expected)
    options = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    generated = model.generate(input_ids, **options)
    torch.testing.assert_close(generated, plain.generate(input_ids, **options))
    stats = feature_cache(model).stats
    assert (stats.misses, stats.hits) == (2, 2) and stats.bypassed_calls >= 4


def test_later_epochs_of_the_stock_trainer_hit_the_cache(tmp_path: Path) -> None:
    model = tiny_bert_classifier()
    rows = [classification_batch(batch=1, seed=seed) for seed in range(8)]
    dataset = [{k: v[0] for k, v in row.items()} for row in rows]
    args = peftplug.PeftArguments(
        output_dir=str(tmp_path), peft_plugins=["head"], peft_config=CACHED,
        num_train_epochs=3, per_device_train_batch_size=4, learning_rate=1e-2,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, **peftplug.trainer_kwargs())
    with counting_rows(model.bert.embeddings) as backbone_rows:
        trainer.train()
    stats = feature_cache(model).stats
    assert backbone_rows == [4, 4]
    assert (stats.misses, stats.hits, stats.bypassed_calls) == (8, 16, 0)
