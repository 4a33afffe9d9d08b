"""Prompt tuning's behaviour: counts, HF PEFT as an oracle, inputs, named adapters, generate."""

from __future__ import annotations

import copy

import peft
import pytest
import torch
from torch import nn
from transformers import TrainingArguments

import peftplug
from peftplug.optim import build_param_groups
from peftplug.testing.tiny_models import (
    causal_lm_batch,
    classification_batch,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)
from peftplug_prompt import PromptEmbedding, prompt_layer

TOKENS = 5
RANDOM_PROMPT = {"num_virtual_tokens": TOKENS, "init": "random"}


def _prompt(model: nn.Module, adapter: str = "default") -> torch.Tensor:
    return prompt_layer(model).prompts[adapter].embedding


def _logits(model: nn.Module, **batch: torch.Tensor) -> torch.Tensor:
    batch.pop("labels", None)
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_trains_tokens_times_hidden_size_plus_the_head() -> None:
    model = tiny_bert_classifier()
    hidden, labels = model.config.hidden_size, model.config.num_labels
    peftplug.apply(model, "prompt", {"prompt": {"num_virtual_tokens": TOKENS}})
    head = hidden * labels + labels
    assert peftplug.trainable_parameters(model).trainable == TOKENS * hidden + head
    llama = peftplug.apply(tiny_llama(), "prompt", {"prompt": {"num_virtual_tokens": TOKENS}})
    assert peftplug.trainable_parameters(llama).trainable == TOKENS * llama.config.hidden_size


@pytest.mark.parametrize("build", [tiny_bert_classifier, tiny_llama], ids=["bert", "llama"])
def test_outputs_match_peft_prompt_tuning(build) -> None:
    base = build()
    is_classifier = hasattr(base, "classifier")
    theirs = peft.get_peft_model(
        copy.deepcopy(base),
        peft.PromptTuningConfig(
            task_type="SEQ_CLS" if is_classifier else "CAUSAL_LM", num_virtual_tokens=TOKENS
        ),
    )
    ours = peftplug.apply(base, "prompt", {"prompt": {"num_virtual_tokens": TOKENS}})
    with torch.no_grad():
        _prompt(ours).copy_(theirs.prompt_encoder["default"].embedding.weight)
    batch = classification_batch() if is_classifier else causal_lm_batch()
    if is_classifier:
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        batch["token_type_ids"][:, 6:] = 1
    with torch.no_grad():
        expected = theirs.eval()(**batch)
        got = ours.eval()(**batch)
    expected_logits = expected.logits if is_classifier else expected.logits[:, TOKENS:]
    torch.testing.assert_close(got.logits, expected_logits, rtol=1e-5, atol=1e-5)
    if is_classifier:  # PEFT's causal loss also scores the first token (predicted by the prompt)
        torch.testing.assert_close(got.loss, expected.loss, rtol=1e-5, atol=1e-5)


def test_disabled_adapters_give_the_base_model_and_names_switch() -> None:
    model = tiny_llama()
    batch = causal_lm_batch()
    base = _logits(model, **batch)
    peftplug.apply(model, "prompt", {"prompt": {"num_virtual_tokens": 3}})
    peftplug.apply(model, "prompt", {"prompt": {"num_virtual_tokens": 6}}, adapter_name="other")
    first = _logits(model, **batch)
    assert not _prompt(model, "other").requires_grad
    peftplug.set_active_adapter(model, "other")
    second = _logits(model, **batch)
    assert _prompt(model, "other").requires_grad and not _prompt(model).requires_grad
    assert not torch.allclose(first, second) and not torch.allclose(second, base)
    with peftplug.disable_adapters(model):
        torch.testing.assert_close(_logits(model, **batch), base, rtol=0, atol=0)
    peftplug.delete_adapter(model, "other")
    torch.testing.assert_close(_logits(model, **batch), first)
    peftplug.unload(model)
    assert type(model.get_input_embeddings()) is nn.Embedding
    assert not model._forward_pre_hooks and not model._forward_hooks
    torch.testing.assert_close(_logits(model, **batch), base, rtol=0, atol=0)


@pytest.mark.parametrize(
    "build", [tiny_bert_classifier, tiny_llama, tiny_gpt2], ids=["bert", "llama", "gpt2"]
)
def test_explicit_positions_and_segments_match_the_defaults(build) -> None:
    """position_ids 0..L-1 and all-zero token_type_ids mean what the model assumes without them."""
    model = peftplug.apply(build(), "prompt", {"prompt": {"num_virtual_tokens": TOKENS}})
    batch = classification_batch() if hasattr(model, "classifier") else causal_lm_batch()
    batch.pop("labels")
    length = batch["input_ids"].shape[1]
    explicit = {**batch, "position_ids": torch.arange(length).expand(len(batch["input_ids"]), -1)}
    if hasattr(model, "classifier"):
        explicit["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    torch.testing.assert_close(_logits(model, **explicit), _logits(model, **batch))


def test_positional_inputs_work_like_keywords() -> None:
    model = peftplug.apply(tiny_bert_classifier(), "prompt", {"prompt": {"num_virtual_tokens": 2}})
    batch = classification_batch()
    with torch.no_grad():
        positional = model(batch["input_ids"], batch["attention_mask"]).logits
    torch.testing.assert_close(positional, _logits(model, **batch))


def test_causal_lm_loss_scores_the_same_tokens_and_logits_line_up() -> None:
    """The loss equals cross-entropy over the caller's tokens computed from the returned logits."""
    model = peftplug.apply(tiny_llama(), "prompt", {"prompt": {"num_virtual_tokens": TOKENS}})
    batch = causal_lm_batch()
    with torch.no_grad():
        output = model.eval()(**batch)
    assert output.logits.shape[:2] == batch["input_ids"].shape
    vocabulary = output.logits.shape[-1]
    expected = nn.functional.cross_entropy(
        output.logits[:, :-1].reshape(-1, vocabulary), batch["labels"][:, 1:].reshape(-1)
    )
    torch.testing.assert_close(output.loss, expected)


def test_padding_is_masked_and_the_prompt_is_not() -> None:
    """A padded row gives the same logits as the same row unpadded."""
    model = peftplug.apply(tiny_bert_classifier(), "prompt", {"prompt": {"num_virtual_tokens": 3}})
    batch = classification_batch()
    real = int(batch["attention_mask"][0].sum())
    alone = _logits(model, input_ids=batch["input_ids"][:1, :real])
    torch.testing.assert_close(_logits(model, **batch)[:1], alone, rtol=1e-5, atol=1e-5)


def test_the_soft_prompt_gets_no_weight_decay() -> None:
    model = peftplug.apply(tiny_bert_classifier(), "prompt")
    args = TrainingArguments(output_dir="unused", weight_decay=0.1, report_to=[])
    groups = build_param_groups(model, args)
    prompt = _prompt(model)
    (group,) = [g for g in groups if any(p is prompt for p in g["params"])]
    assert group["weight_decay"] == 0.0 and len(group["params"]) == 1
    assert any(g["weight_decay"] == 0.1 for g in groups)  # the head's weight still decays


def test_vocab_init_starts_at_real_token_embeddings() -> None:
    model = tiny_llama()
    table = model.get_input_embeddings().weight.detach().clone()
    peftplug.apply(model, "prompt", {"prompt": {"num_virtual_tokens": TOKENS}})
    for row in _prompt(model):
        assert (table == row).all(dim=1).any()


def test_text_init_without_a_tokenizer_says_how_to_fix_it() -> None:
    model = tiny_llama()
    options = {"init": "text", "init_text": "Classify this:"}
    with pytest.raises(peftplug.ConfigError, match="tokenizer_name_or_path"):
        peftplug.apply(model, "prompt", {"prompt": options})
    with pytest.raises(peftplug.ConfigError, match="tokenizer_name_or_path"):
        missing = {**options, "tokenizer_name_or_path": "/no/such/dir"}
        peftplug.apply(model, "prompt", {"prompt": missing})
    assert type(model.get_input_embeddings()) is nn.Embedding


def test_prompt_is_not_mergeable_and_says_why() -> None:
    model = peftplug.apply(tiny_llama(), "prompt")
    with pytest.raises(peftplug.NotMergeableError, match="cannot be folded"):
        peftplug.merge(model)
    assert isinstance(model.get_input_embeddings(), PromptEmbedding)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_virtual_tokens": 0}, "at least 1"),
        ({"init": "text"}, "needs 'init_text'"),
        ({"init_text": "hello"}, "only used with init='text'"),
        ({"init": "zeros"}, "must be one of"),
    ],
)
def test_bad_options_are_explained(options: dict, message: str) -> None:
    with pytest.raises(peftplug.ConfigError, match=message):
        peftplug.apply(tiny_llama(), "prompt", {"prompt": options})


def _reference_greedy(model: nn.Module, input_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding by hand: the prompt's embeddings before the whole sequence, no cache."""
    prompt = _prompt(model).detach()
    embed = model.get_input_embeddings().base_layer
    ids = input_ids
    with torch.no_grad(), peftplug.disable_adapters(model):
        for _ in range(new_tokens):
            embeds = torch.cat([prompt.expand(len(ids), -1, -1), embed(ids)], dim=1)
            logits = model(inputs_embeds=embeds, use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def test_generate_with_the_kv_cache_equals_decoding_by_hand() -> None:
    model = peftplug.apply(tiny_llama(), "prompt", {"prompt": RANDOM_PROMPT})
    input_ids = causal_lm_batch(batch=2, length=6)["input_ids"]
    expected = _reference_greedy(model, input_ids, new_tokens=8)
    with torch.no_grad():
        generated = model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=8,
            do_sample=False, pad_token_id=0,
        )
        with peftplug.disable_adapters(model):
            plain = model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=8,
                do_sample=False, pad_token_id=0,
            )
    assert torch.equal(generated, expected)
    assert not torch.equal(generated, plain), "the prompt must change what is generated"


def test_generate_with_left_padding_equals_the_row_alone() -> None:
    """The mask generate grows each step is extended consistently: pads stay masked."""
    model = peftplug.apply(tiny_llama(), "prompt", {"prompt": RANDOM_PROMPT})
    ids = causal_lm_batch(batch=2, length=6)["input_ids"]
    padded = ids.clone()
    padded[0, :2] = 0
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    generation = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        batch = model.generate(input_ids=padded, attention_mask=mask, **generation)
        alone = model.generate(input_ids=ids[:1, 2:], attention_mask=mask[:1, 2:], **generation)
    assert torch.equal(batch[0, 2:], alone[0])


def test_trains_with_gradient_checkpointing() -> None:
    model = peftplug.apply(tiny_llama(), "prompt", {"prompt": {"num_virtual_tokens": TOKENS}})
    model.activation_checkpointing_enable()
    model.train()(**causal_lm_batch()).loss.backward()
    assert _prompt(model).grad is not None and _prompt(model).grad.abs().sum() > 0
