"""Bottleneck adapter options, with AdapterHub's defaults for each placement."""

from __future__ import annotations

import dataclasses
from typing import Literal

from peftplug import ConfigError, MethodConfig

Placement = Literal["houlsby", "pfeiffer", "parallel"]
SubLayer = Literal["attention", "feed_forward"]
NonLinearity = Literal["relu", "swish", "gelu", "tanh"]


@dataclasses.dataclass(frozen=True)
class PlacementDefaults:
    """What an unset option means for one placement."""

    sublayers: tuple[SubLayer, ...]
    non_linearity: NonLinearity
    reduction_factor: float
    scaling: float


# AdapterHub's DoubleSeqBnConfig (Houlsby), SeqBnConfig (Pfeiffer) and ParBnConfig (He et al.).
PLACEMENT_DEFAULTS: dict[str, PlacementDefaults] = {
    "houlsby": PlacementDefaults(("attention", "feed_forward"), "swish", 16.0, 1.0),
    "pfeiffer": PlacementDefaults(("feed_forward",), "relu", 16.0, 1.0),
    "parallel": PlacementDefaults(("feed_forward",), "relu", 2.0, 4.0),
}


@dataclasses.dataclass
class AdapterConfig(MethodConfig):
    """Bottleneck adapters: ``up(f(down(h)))`` added to a sub-layer's output in every block.

    ``placement``: ``"houlsby"`` adapts the attention and feed-forward outputs, ``"pfeiffer"``
    the feed-forward output, both sequentially (``h + s * adapter(h)``, ``h`` the sub-layer
    output before the block's residual add); ``"parallel"`` adds ``s * adapter(x)`` computed
    from the sub-layer INPUT ``x`` (He et al. 2022).
    ``reduction_factor`` / ``bottleneck_size``: the bottleneck width ``m = hidden // factor``,
    or ``m`` itself; give at most one. ``sublayers``: which sub-layers get adapters.
    Unset options take AdapterHub's value for the placement (``PLACEMENT_DEFAULTS``) and are
    recorded resolved, so saved configs describe exactly what ran.
    ``train_layer_norms``: also tune each block's layer norms (each adapter its own copy).
    ``train_head``: also train the task head of classification models.
    """

    method = "adapter"

    placement: Placement = "houlsby"
    reduction_factor: float | None = None
    bottleneck_size: int | None = None
    non_linearity: NonLinearity | None = None
    scaling: float | None = None
    sublayers: list[SubLayer] | None = None
    train_layer_norms: bool = False
    train_head: bool = True

    def __post_init__(self) -> None:
        defaults = PLACEMENT_DEFAULTS.get(self.placement)
        if defaults is None:  # an invalid placement: validate() names the choices
            return
        if self.reduction_factor is None and self.bottleneck_size is None:
            self.reduction_factor = defaults.reduction_factor
        if self.non_linearity is None:
            self.non_linearity = defaults.non_linearity
        if self.scaling is None:
            self.scaling = defaults.scaling
        if self.sublayers is None:
            self.sublayers = list(defaults.sublayers)

    def validate(self) -> None:
        if self.placement not in PLACEMENT_DEFAULTS:
            raise ConfigError(
                f"adapter option 'placement' must be one of {', '.join(PLACEMENT_DEFAULTS)}, "
                f"got {self.placement!r}"
            )
        if self.reduction_factor is not None and self.bottleneck_size is not None:
            raise ConfigError(
                "adapter options 'reduction_factor' and 'bottleneck_size' both set the bottleneck "
                f"width (got {self.reduction_factor} and {self.bottleneck_size}): give only one"
            )
        if self.reduction_factor is not None and self.reduction_factor <= 0:
            raise ConfigError(
                f"adapter option 'reduction_factor' must be positive (16 is typical), "
                f"got {self.reduction_factor}"
            )
        if self.bottleneck_size is not None and self.bottleneck_size < 1:
            raise ConfigError(
                "adapter option 'bottleneck_size' must be a positive width, "
                f"got {self.bottleneck_size}"
            )
        if self.scaling is not None and self.scaling <= 0:
            raise ConfigError(f"adapter option 'scaling' must be positive, got {self.scaling}")
        if not self.sublayers or len(set(self.sublayers)) != len(self.sublayers):
            raise ConfigError(
                f"adapter option 'sublayers' must name 'attention' and/or 'feed_forward' once "
                f"each, got {self.sublayers!r}"
            )

    def bottleneck_for(self, hidden_size: int) -> int:
        """The bottleneck width ``m`` for a model of this hidden size."""
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        assert self.reduction_factor is not None  # filled by __post_init__
        width = int(hidden_size // self.reduction_factor)
        if width < 1:
            raise ConfigError(
                f"adapter reduction_factor {self.reduction_factor} leaves no bottleneck for hidden "
                f"size {hidden_size}: use a reduction_factor of at most {hidden_size} or set "
                "bottleneck_size"
            )
        return width
