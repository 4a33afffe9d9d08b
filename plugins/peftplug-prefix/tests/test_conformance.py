"""Prefix tuning passes the conformance suite on BERT, Llama (GQA) and GPT-2, MLP and direct."""

from torch import nn

from peftplug.testing import MethodConformance
from peftplug.testing.tiny_models import tiny_gpt2


class TestPrefixMlpOnBertClassifier(MethodConformance):
    method = "prefix"
    config = {"num_virtual_tokens": 4, "encoder_hidden_size": 16}
    mergeable = False


class TestDirectPrefixOnLlama(MethodConformance):
    method = "prefix"
    config = {"num_virtual_tokens": 4, "projection": False}
    model_kind = "causal_lm"
    mergeable = False


class TestFoldedPrefixOnLlama(MethodConformance):
    method = "prefix"
    config = {"num_virtual_tokens": 4, "folded": True, "init": "random"}
    model_kind = "causal_lm"
    mergeable = False


class TestPrefixMlpOnGpt2(MethodConformance):
    method = "prefix"
    config = {"num_virtual_tokens": 3, "encoder_hidden_size": 8}
    model_kind = "causal_lm"
    mergeable = False

    def make_model(self, hidden_size: int = 32) -> nn.Module:
        return tiny_gpt2(hidden_size=hidden_size)
