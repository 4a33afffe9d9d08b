"""Test helpers for method plugins: the conformance suite, tiny models, short real trainings."""

from peftplug.testing.conformance import MethodConformance
from peftplug.testing.training import majority_share, stock_trainer

__all__ = ["MethodConformance", "majority_share", "stock_trainer"]
