"""Bottleneck adapters pass the conformance suite (not mergeable) on BERT, Llama and GPT-2."""

from torch import nn

from peftplug.testing import MethodConformance
from peftplug.testing.tiny_models import tiny_gpt2


class TestHoulsbyOnBertClassifier(MethodConformance):
    method = "adapter"
    config = {"placement": "houlsby", "bottleneck_size": 8}
    mergeable = False


class TestParallelOnBertClassifier(MethodConformance):
    """BERT's feed-forward is split over ``intermediate`` and ``output.dense``."""

    method = "adapter"
    config = {"placement": "parallel", "reduction_factor": 4, "train_layer_norms": True}
    mergeable = False


class TestPfeifferOnLlama(MethodConformance):
    method = "adapter"
    config = {"placement": "pfeiffer", "bottleneck_size": 8, "train_layer_norms": True}
    model_kind = "causal_lm"
    mergeable = False


class TestParallelOnLlama(MethodConformance):
    """Llama's feed-forward input and output module are the same ``mlp``."""

    method = "adapter"
    config = {"placement": "parallel", "sublayers": ["attention", "feed_forward"]}
    model_kind = "causal_lm"
    mergeable = False


class TestHoulsbyOnGpt2Conv1D(MethodConformance):
    method = "adapter"
    config = {"placement": "houlsby", "reduction_factor": 4, "non_linearity": "gelu"}
    model_kind = "causal_lm"
    mergeable = False

    def make_model(self, hidden_size: int = 32) -> nn.Module:
        return tiny_gpt2(hidden_size=hidden_size)
