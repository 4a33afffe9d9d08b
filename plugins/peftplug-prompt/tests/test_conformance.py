"""Prompt tuning passes the conformance suite on a BERT classifier, a Llama LM and a GPT-2 LM."""

from torch import nn

from peftplug.testing import MethodConformance
from peftplug.testing.tiny_models import tiny_gpt2


class TestPromptOnBertClassifier(MethodConformance):
    method = "prompt"
    config = {"num_virtual_tokens": 4}
    mergeable = False


class TestPromptOnLlama(MethodConformance):
    method = "prompt"
    config = {"num_virtual_tokens": 4, "init": "random"}
    model_kind = "causal_lm"
    mergeable = False


class TestPromptOnGpt2(MethodConformance):
    method = "prompt"
    config = {"num_virtual_tokens": 3}
    model_kind = "causal_lm"
    mergeable = False

    def make_model(self, hidden_size: int = 32) -> nn.Module:
        return tiny_gpt2(hidden_size=hidden_size)
