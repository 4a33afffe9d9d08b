"""full, partial and head pass the conformance suite on a BERT classifier and a Llama LM."""

from pathlib import Path

import torch

import peftplug
from peftplug.testing import MethodConformance


class FullConformance(MethodConformance):
    method = "full"
    config: dict = {}

    def test_save_load_round_trip_is_exact(self, tmp_path: Path) -> None:
        """The suite's version asserts a small file; full fine-tuning saves every parameter."""
        trained = self.trained_model()
        peftplug.save_adapter(trained, tmp_path / "adapter")
        loaded = peftplug.load_adapter(self.make_model(), tmp_path / "adapter")
        torch.testing.assert_close(self.outputs(loaded), self.outputs(trained), rtol=0, atol=0)
        saved_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
        every_parameter = sum(4 * p.numel() for p in trained.parameters())
        assert every_parameter <= saved_bytes < every_parameter + 64 * 1024


class TestFullOnBertClassifier(FullConformance):
    pass


class TestFullOnLlama(FullConformance):
    model_kind = "causal_lm"


class TestPartialOnBertClassifier(MethodConformance):
    method = "partial"
    config = {"last_k": 1}


class TestPartialOnLlama(MethodConformance):
    method = "partial"
    config = {"last_k": 1, "modules": ["model.norm"]}
    model_kind = "causal_lm"


class TestHeadOnBertClassifier(MethodConformance):
    method = "head"


class TestHeadWithFeatureCacheOnBertClassifier(MethodConformance):
    method = "head"
    config = {"cache_features": True}


class TestHeadOnLlamaOutputLayerWithFeatureCache(MethodConformance):
    method = "head"
    config = {"train_output_layer": True, "cache_features": True}
    model_kind = "causal_lm"
