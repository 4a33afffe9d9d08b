"""Prefix tuning passes the conformance suite on BERT, Llama (GQA) and GPT-2, MLP and direct."""

from torch import nn

from peftplug.testing import MethodConformance
from peftplug.testing.tiny_models import tiny_gpt2


class PrefixConformance(MethodConformance):
    method = "prefix"
    mergeable = False


class TestDirectPrefixOnLlama(PrefixConformance):
    config = {"num_virtual_tokens": 4, "projection": False}
    model_kind = "causal_lm"


class TestFoldedPrefixOnLlama(PrefixConformance):
    config = {"num_virtual_tokens": 4, "folded": True, "init": "random"}
    model_kind = "causal_lm"


class TestPrefixMlpOnBertClassifier(PrefixConformance):
    config = {"num_virtual_tokens": 4, "encoder_hidden_size": 16}


class TestPrefixMlpOnGpt2(PrefixConformance):
    config = {"num_virtual_tokens": 3, "encoder_hidden_size": 8}
    model_kind = "causal_lm"

    def make_model(self, hidden_size: int = 32) -> nn.Module:
        return tiny_gpt2(hidden_size=hidden_size)
