"""95% intervals for held-out figures: Wilson's for an accuracy, a bootstrap for a loss."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from peftplug.metrics import per_token_mean

Z_95 = 1.959963984540054  # the normal distribution's 97.5th percentile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (good near 0 and 1, unlike the normal one)."""
    if trials < 1:
        raise ValueError("an interval needs at least one trial")
    share = successes / trials
    scale = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / scale
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ratio_interval(
    pairs: Sequence[tuple[float, int]], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap of ``sum(value) / sum(count)`` over examples (a per-token mean).

    Examples, not tokens, are resampled: tokens of one answer are not independent.
    """
    if not pairs:
        raise ValueError("an interval needs at least one example")
    generator = random.Random(seed)
    size = len(pairs)
    ratios = []
    for _ in range(resamples):
        drawn = [pairs[generator.randrange(size)] for _ in range(size)]
        ratios.append(per_token_mean(drawn))
    ratios.sort()
    return ratios[int(0.025 * (resamples - 1))], ratios[math.ceil(0.975 * (resamples - 1))]


def majority_rate(labels: Sequence[int]) -> float:
    """The accuracy of always answering the most frequent label."""
    return max(labels.count(label) for label in set(labels)) / len(labels)
