"""Normalization factory: conf/norm/<name>.yaml -> layers for conv feature maps and for FC features.

Besides name and placement, every norm takes eps and affine_weight; batch norm alone takes momentum, the only one
that keeps running statistics (instance norm is built without them). The defaults are PyTorch's own."""

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from trickbench.errors import ConfigError, is_number
from trickbench.rules import NodeCheck, Rule, integer, one_of

PLACEMENTS = ("before_act", "after_act")
NORMS = ("none", "batch", "layer", "group", "instance")
KEYS = ("name", "placement", "groups", "eps", "momentum", "affine_weight")


def _group_norm(groups: int, eps: float, per_group: int = 1) -> Callable[[int], nn.Module]:
    """per_group: the fewest channels a group keeps; a feature vector's group of one channel has no variance."""
    return lambda c: nn.GroupNorm(math.gcd(groups, c, max(c // per_group, 1)), c, eps=eps)


# name -> (conv layer factory, FC layer factory or None where the norm has no meaning for a feature vector)
def _factories(name: str, groups: int, eps: float, momentum: float | None):
    batch = {"eps": eps, "momentum": momentum}
    return {
        "none": (lambda c: nn.Identity(), lambda c: nn.Identity()),
        "batch": (partial(nn.BatchNorm2d, **batch), partial(nn.BatchNorm1d, **batch)),
        "layer": (lambda c: nn.GroupNorm(1, c, eps=eps), partial(nn.LayerNorm, eps=eps)),
        "group": (_group_norm(groups, eps), _group_norm(groups, eps, per_group=2)),
        # affine like the other norms, so that norm=instance differs from norm=batch only in what it averages over
        "instance": (lambda c: nn.InstanceNorm2d(c, eps=eps, affine=True), None),
    }[name]


def _fixed_weight(factory: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
    """The layer with its weight (gamma) left at 1 and out of training: only the bias shifts (airbench)."""

    def build(c: int) -> nn.Module:
        layer = factory(c)
        layer.weight.requires_grad_(False)
        return layer

    return build


@dataclass(frozen=True)
class NormSpec:
    name: str
    conv: Callable[[int], nn.Module]
    fc: Callable[[int], nn.Module] | None
    placement: str
    affine_weight: bool = True  # false: every norm layer's weight is fixed at 1 (a zero-gamma init cannot apply)

    @property
    def enabled(self) -> bool:
        return self.name != "none"


def _checked(cfg, name: str) -> tuple[float, float | None, bool]:
    """eps, momentum and affine_weight of cfg, or the ConfigError naming the bad one."""
    eps = cfg.get("eps", 1e-5)
    if not (is_number(eps) and eps > 0):
        raise ConfigError("norm.eps", eps, "a number > 0 (added to the variance before the square root)")
    momentum = cfg.get("momentum", 0.1)
    if name != "batch" and "momentum" in cfg:
        raise ConfigError("norm.momentum", momentum, f"only norm=batch keeps running statistics; norm={name} has none")
    if momentum is not None and not (is_number(momentum) and 0 < momentum <= 1):
        allowed = "a number in (0, 1] (running = (1 - momentum) x running + momentum x batch), or null (plain average)"
        raise ConfigError("norm.momentum", momentum, allowed)
    affine_weight = cfg.get("affine_weight", True)
    if not isinstance(affine_weight, bool):
        raise ConfigError("norm.affine_weight", affine_weight, "true (gamma trained) or false (gamma fixed at 1)")
    return eps, momentum, affine_weight


def _check_keys(node, cfg=None) -> None:
    """A key no norm reads, named with those they take."""
    for key in node:
        if key not in KEYS:
            raise ConfigError(f"norm.{key}", node[key], f"an unknown key: norm takes {', '.join(KEYS)}")
    _checked(node, node.get("name"))


NAME = Rule("norm.name", one_of(NORMS), f"one of {list(NORMS)}")
PLACEMENT = Rule(
    "norm.placement", one_of(PLACEMENTS), f"one of {list(PLACEMENTS)} (the norm after the conv or the activation)"
)
RULES = [
    NAME,
    PLACEMENT,
    Rule("norm.groups", integer(1), "a positive integer (a layer of C channels takes gcd(groups, C) groups)"),
    NodeCheck("norm", _check_keys, whole=True),
]


def make_norm_spec(cfg) -> NormSpec:
    """cfg: {name, placement, groups?, eps?, momentum? (batch only), affine_weight?}."""
    name, placement = cfg["name"], cfg.get("placement", "before_act")
    NAME.check(name)
    PLACEMENT.check(placement)
    eps, momentum, affine_weight = _checked(cfg, name)
    conv, fc = _factories(name, int(cfg.get("groups", 8)), eps, momentum)
    if not affine_weight and name != "none":
        conv, fc = _fixed_weight(conv), fc and _fixed_weight(fc)
    return NormSpec(name, conv, fc, placement, affine_weight)
