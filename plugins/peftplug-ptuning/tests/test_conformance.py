"""P-tuning passes the conformance suite on a BERT classifier and a Llama LM, both encoders."""

from peftplug.testing import MethodConformance


class PTuningConformance(MethodConformance):
    method = "ptuning"
    mergeable = False


class TestPTuningMlpOnBertClassifier(PTuningConformance):
    config = {"num_virtual_tokens": 4, "encoder_hidden_size": 16}


class TestPTuningLstmOnLlama(PTuningConformance):
    config = {"num_virtual_tokens": 4, "encoder": "lstm", "encoder_hidden_size": 8}
    model_kind = "causal_lm"


class TestFoldedPTuningOnLlama(PTuningConformance):
    config = {"num_virtual_tokens": 4, "folded": True}
    model_kind = "causal_lm"
