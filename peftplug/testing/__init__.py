"""Test helpers for method plugins: the conformance suite, tiny models, real-model workloads and
short real trainings."""

from peftplug.testing.conformance import MethodConformance
from peftplug.testing.training import majority_share, stock_trainer
from peftplug.testing.workloads import (
    CausalLMWorkload,
    EncoderWorkload,
    Workload,
    load_causal_lm_workload,
    load_encoder_workload,
)

__all__ = [
    "CausalLMWorkload",
    "EncoderWorkload",
    "MethodConformance",
    "Workload",
    "load_causal_lm_workload",
    "load_encoder_workload",
    "majority_share",
    "stock_trainer",
]
