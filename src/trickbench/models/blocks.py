"""The block vocabulary every backbone is built from. No block names an activation, norm or init:
they come in a LayerKit built from the config."""

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from trickbench.nn.norm import NormSpec


@dataclass(frozen=True)
class LayerKit:
    act: Callable[[], nn.Module]
    norm: NormSpec


POOLS = ("max", "avg", "none")


def _pool(kind: str | None) -> nn.Module | None:
    # ceil_mode: odd maps (7x7) pool to the size a stride-2 1x1 shortcut conv gives (4x4)
    return {"max": nn.MaxPool2d(2, ceil_mode=True), "avg": nn.AvgPool2d(2, ceil_mode=True), None: None, "none": None}[
        kind
    ]


class ConvBlock(nn.Sequential):
    """conv -> norm -> act (norm.placement=before_act) or conv -> act -> norm (after_act), then dropout.
    act=False leaves the activation out (the last conv of a ResNet block: it comes after the sum)."""

    def __init__(self, cin, cout, kit: LayerKit, kernel_size=3, stride=1, padding=None, act=True, dropout=0.0):
        padding = kernel_size // 2 if padding is None else padding
        norm_then_act = kit.norm.placement == "before_act" or not act
        # a bias right before a norm layer is cancelled by the norm's mean subtraction
        bias = not (kit.norm.enabled and norm_then_act)
        layers = [nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=bias)]
        acts = [kit.act()] if act else []
        layers += [kit.norm.conv(cout), *acts] if norm_then_act else [*acts, kit.norm.conv(cout)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class Stage(nn.Module):
    """convs, then pooling; with skip: out = pool(convs(x)) + shortcut(x), the shortcut being the identity
    or, when the shape changes, a 1x1 conv with the block's stride. post_act: an activation after the sum
    (ResNet's basic block). avg_down: a strided shortcut average-pools, then convolves with stride 1 (ResNet-D).
    drop: in training, each sample's pool(convs(x)) is zeroed with this probability and otherwise scaled by
    1 / (1 - drop) (stochastic depth, torchvision's StochasticDepth in row mode); the shortcut is never dropped, and
    in eval the block is unchanged. Needs skip."""

    def __init__(
        self,
        convs: Sequence[nn.Module],
        cin: int,
        cout: int,
        kit: LayerKit,
        stride: int = 1,
        pool: str | None = None,
        skip: bool = False,
        post_act: bool = False,
        avg_down: bool = False,
        drop: float = 0.0,
    ):
        super().__init__()
        if drop and not skip:
            raise ValueError("Stage: drop (stochastic depth) needs skip: without a shortcut the whole output would go")
        self.convs = nn.Sequential(*convs)
        self.pool = _pool(pool)
        total_stride = stride * (2 if self.pool is not None else 1)
        self.shortcut = None
        if skip:
            if cin == cout and total_stride == 1:
                self.shortcut = nn.Identity()
            else:
                # a strided 1x1 conv reads 1 pixel in stride**2; pooling first lets the shortcut see them all
                down = avg_down and total_stride > 1
                pool = [nn.AvgPool2d(total_stride, ceil_mode=True)] if down else []
                self.shortcut = nn.Sequential(
                    *pool,
                    nn.Conv2d(cin, cout, 1, 1 if down else total_stride, bias=not kit.norm.enabled),
                    kit.norm.conv(cout),
                )
        self.post_act = kit.act() if post_act else None
        # no parameters or buffers: a checkpoint loads with or without it
        self.drop = StochasticDepth(drop, mode="row") if drop else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        if self.pool is not None:
            out = self.pool(out)
        if self.drop is not None:
            out = self.drop(out)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.post_act(out) if self.post_act is not None else out


class Dense(nn.Module):
    """Linear -> norm -> act -> dropout, optionally residual (a bias-free projection where widths differ)."""

    def __init__(self, fin: int, fout: int, kit: LayerKit, dropout=0.0, skip=False):
        super().__init__()
        # norms without a meaning for a feature vector (instance) are left out of FC layers
        norm = kit.norm.fc(fout) if kit.norm.fc is not None else nn.Identity()
        act = kit.act()
        use_bias = not (kit.norm.enabled and kit.norm.placement == "before_act")
        self.layers = nn.Sequential(
            nn.Linear(fin, fout, bias=use_bias),
            *([norm, act] if kit.norm.placement == "before_act" else [act, norm]),
            *([nn.Dropout(dropout)] if dropout else []),
        )
        self.shortcut = None
        if skip:
            self.shortcut = nn.Identity() if fin == fout else nn.Linear(fin, fout, bias=False)

    def forward(self, x):
        out = self.layers(x)
        return out + self.shortcut(x) if self.shortcut is not None else out


class Head(nn.Sequential):
    """Flatten (pool="flatten") or global-average-pool (pool="avg") -> hidden Dense layers -> Linear to classes."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        kit: LayerKit,
        pool: str = "flatten",
        dropout: float = 0.0,
        skip: bool = False,
    ):
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if pool == "avg" else []
        layers.append(nn.Flatten())
        width = in_features
        for h in hidden:
            layers.append(Dense(width, h, kit, dropout, skip))
            width = h
        if pool == "avg" and dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


@torch.no_grad()
def output_shape(module: nn.Module, in_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of module's output for one (C, H, W) input, found by a forward pass in eval mode."""
    was_training = module.training
    module.eval()
    shape = tuple(module(torch.zeros(2, *in_shape)).shape[1:])
    module.train(was_training)
    return shape


class Backbone(nn.Module):
    """features (stages) -> head. Every model in models/ is one of these."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x):
        return self.head(self.features(x))
