"""Prompt tuning passes the conformance suite on a BERT classifier, a Llama LM and a GPT-2 LM."""

from torch import nn

from peftplug.testing import MethodConformance
from peftplug.testing.tiny_models import tiny_gpt2


class PromptConformance(MethodConformance):
    method = "prompt"
    mergeable = False


class TestPromptOnBertClassifier(PromptConformance):
    config = {"num_virtual_tokens": 4}


class TestPromptOnLlama(PromptConformance):
    config = {"num_virtual_tokens": 4, "init": "random"}
    model_kind = "causal_lm"


class TestPromptOnGpt2(PromptConformance):
    config = {"num_virtual_tokens": 3}
    model_kind = "causal_lm"

    def make_model(self, hidden_size: int = 32) -> nn.Module:
        return tiny_gpt2(hidden_size=hidden_size)
