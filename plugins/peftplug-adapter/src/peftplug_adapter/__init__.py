"""Bottleneck adapters for peftplug: small down/up projections inside every transformer block."""

from peftplug_adapter.config import AdapterConfig
from peftplug_adapter.layer import BottleneckAdapterLayer

__all__ = ["AdapterConfig", "BottleneckAdapterLayer"]
