"""LoRA passes the conformance suite on a BERT classifier, a Llama LM and a GPT-2 (Conv1D) LM."""

from torch import nn

from peftplug.testing import MethodConformance
from peftplug.testing.tiny_models import tiny_gpt2


class TestLoraOnBertClassifier(MethodConformance):
    method = "lora"
    config = {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}


class TestLoraAllLinearOnLlama(MethodConformance):
    method = "lora"
    config = {"r": 4, "target_modules": "all-linear", "dropout": 0.1}
    model_kind = "causal_lm"


class TestLoraOnGpt2Conv1D(MethodConformance):
    method = "lora"
    config = {"r": 4, "target_modules": ["c_attn", "c_proj"]}
    model_kind = "causal_lm"

    def make_model(self, hidden_size: int = 32) -> nn.Module:
        return tiny_gpt2(hidden_size=hidden_size)
