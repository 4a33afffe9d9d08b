"""Tiny randomly initialised models for fast tests (no download).

transformers initialises every bias to zero and every norm to the identity; these models then get
small random biases and norm weights (from their own generator, so the other weights are as
transformers draws them), so a method that drops a bias or skips a norm changes the outputs.
"""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

VOCAB_SIZE = 128
BIAS_STD = 0.02
NORM_STD = 0.1


def with_nontrivial_biases_and_norms(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """Every bias ~ N(0, 0.02); every norm's weight ~ 1 + N(0, 0.1) and bias ~ N(0, 0.1)."""
    generator = torch.Generator().manual_seed(seed + 1)
    norms = {
        id(parameter)
        for module in model.modules()
        if type(module).__name__.endswith(("LayerNorm", "RMSNorm"))
        for parameter in module.parameters()
    }
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if id(parameter) in norms:
                parameter.copy_((1.0 if name.endswith("weight") else 0.0) + NORM_STD * noise)
            elif name.endswith("bias"):
                parameter.copy_(BIAS_STD * noise)
    return model


def tiny_bert_classifier(
    num_labels: int = 2, seed: int = 0, hidden_size: int = 32
) -> PreTrainedModel:
    """A 2-layer BERT sequence classifier with (non-zero) biases."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    return with_nontrivial_biases_and_norms(BertForSequenceClassification(config), seed).eval()


def tiny_llama(seed: int = 0, hidden_size: int = 32) -> PreTrainedModel:
    """A 2-layer Llama causal LM with grouped-query attention (4 query, 2 kv heads), no biases."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    return with_nontrivial_biases_and_norms(LlamaForCausalLM(config), seed).eval()


def tiny_gpt2(seed: int = 0, hidden_size: int = 32) -> PreTrainedModel:
    """A 2-layer GPT-2 causal LM (its projections are transformers' Conv1D)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB_SIZE, n_embd=hidden_size, n_layer=2, n_head=4, n_positions=64,
        bos_token_id=1, eos_token_id=2,
    )
    return with_nontrivial_biases_and_norms(GPT2LMHeadModel(config), seed).eval()


def classification_batch(batch: int = 4, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids with a padded tail and labels, for a classifier."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB_SIZE, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, length // 2 :] = 0
    labels = torch.randint(0, 2, (batch,), generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def causal_lm_batch(batch: int = 4, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids with labels equal to the inputs, for a causal LM."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB_SIZE, (batch, length), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids}
