"""Test helpers for method plugins: the conformance suite and tiny models."""

from peftplug.testing.conformance import MethodConformance

__all__ = ["MethodConformance"]
