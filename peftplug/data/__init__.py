"""Real pretrained models and labelled data, loaded offline from files inside installed packages."""

from peftplug.data.datasets import (
    LabelledText,
    PromptCompletion,
    Split,
    load_bbc_news,
    load_qa_pairs,
    load_reviews,
)
from peftplug.data.encode import CausalLMCollator, causal_lm_dataset, classification_dataset
from peftplug.data.locate import MissingDataPackage, package_file
from peftplug.data.models import (
    causal_lm_path,
    encoder_path,
    load_causal_lm,
    load_encoder,
)

__all__ = [
    "CausalLMCollator",
    "LabelledText",
    "MissingDataPackage",
    "PromptCompletion",
    "Split",
    "causal_lm_dataset",
    "causal_lm_path",
    "classification_dataset",
    "encoder_path",
    "load_bbc_news",
    "load_causal_lm",
    "load_encoder",
    "load_qa_pairs",
    "load_reviews",
    "package_file",
]
