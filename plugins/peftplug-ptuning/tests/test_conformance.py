"""P-tuning passes the conformance suite on a BERT classifier and a Llama LM, both encoders."""

from peftplug.testing import MethodConformance


class TestPTuningMlpOnBertClassifier(MethodConformance):
    method = "ptuning"
    config = {"num_virtual_tokens": 4, "encoder_hidden_size": 16}
    mergeable = False


class TestPTuningLstmOnLlama(MethodConformance):
    method = "ptuning"
    config = {"num_virtual_tokens": 4, "encoder": "lstm", "encoder_hidden_size": 8}
    model_kind = "causal_lm"
    mergeable = False


class TestFoldedPTuningOnLlama(MethodConformance):
    method = "ptuning"
    config = {"num_virtual_tokens": 4, "folded": True}
    model_kind = "causal_lm"
    mergeable = False
