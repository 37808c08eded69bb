"""Normalization factory: conf/norm/<name>.yaml -> layers for conv feature maps and for FC features."""

import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from trickbench.errors import ConfigError

PLACEMENTS = ("before_act", "after_act")


def _group_norm(groups: int) -> Callable[[int], nn.Module]:
    return lambda c: nn.GroupNorm(math.gcd(groups, c), c)


# name -> (conv layer factory, FC layer factory or None where the norm has no meaning for a feature vector)
def _factories(name: str, groups: int):
    return {
        "none": (lambda c: nn.Identity(), lambda c: nn.Identity()),
        "batch": (nn.BatchNorm2d, nn.BatchNorm1d),
        "layer": (lambda c: nn.GroupNorm(1, c), nn.LayerNorm),
        "group": (_group_norm(groups), _group_norm(groups)),
        # affine like the other norms, so that norm=instance differs from norm=batch only in what it averages over
        "instance": (lambda c: nn.InstanceNorm2d(c, affine=True), None),
    }[name]


NORMS = ("none", "batch", "layer", "group", "instance")


@dataclass(frozen=True)
class NormSpec:
    name: str
    conv: Callable[[int], nn.Module]
    fc: Callable[[int], nn.Module] | None
    placement: str

    @property
    def enabled(self) -> bool:
        return self.name != "none"


def make_norm_spec(cfg) -> NormSpec:
    """cfg: {name, placement, groups?}."""
    name, placement = cfg["name"], cfg.get("placement", "before_act")
    if name not in NORMS:
        raise ConfigError("norm.name", name, f"one of {list(NORMS)}")
    if placement not in PLACEMENTS:
        raise ConfigError("norm.placement", placement, f"one of {list(PLACEMENTS)}")
    conv, fc = _factories(name, int(cfg.get("groups", 8)))
    return NormSpec(name, conv, fc, placement)
