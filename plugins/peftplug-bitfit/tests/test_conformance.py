"""BitFit passes the conformance suite on a BERT classifier and, via norms, a bias-free Llama."""

from peftplug.testing import MethodConformance


class TestBitFitOnBertClassifier(MethodConformance):
    method = "bitfit"
    config = {}


class TestBitFitReducedVariantOnBertClassifier(MethodConformance):
    method = "bitfit"
    config = {"target_modules": ["query", "value", "intermediate.dense"], "train_head": False}


class TestBitFitWithNormsOnLlama(MethodConformance):
    method = "bitfit"
    config = {"train_norms": True}
    model_kind = "causal_lm"
