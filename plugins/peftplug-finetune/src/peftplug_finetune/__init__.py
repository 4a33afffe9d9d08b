"""Full, partial (last k blocks, named modules) and head-only fine-tuning for peftplug."""

from peftplug_finetune.cached_backbone import feature_cache
from peftplug_finetune.config import FullConfig, HeadConfig, PartialConfig
from peftplug_finetune.feature_cache import CacheStats, FeatureCache

__all__ = [
    "CacheStats",
    "FeatureCache",
    "FullConfig",
    "HeadConfig",
    "PartialConfig",
    "feature_cache",
]
