"""mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) as a step trick: the training batch becomes mixed images
with soft targets, one Beta(alpha, alpha) weight per batch, each image mixed with its neighbour in the shuffled
batch (torchvision's v2.MixUp / v2.CutMix). With both alphas > 0 each batch gets one of the two, chosen at random
(as timm and torchvision's references do). Train accuracy still counts the original labels.
Configured by augment.mixup_alpha and augment.cutmix_alpha (trick=mixup, trick=cutmix); 0 is off."""

import lightning as L
import torch
from torchvision.transforms import v2

from trickbench.rules import Rule, nonnegative
from trickbench.tricks.base import StepTrick

RULES = [
    Rule(f"{node}.{alpha}", nonnegative, "a number >= 0 (0: off)")
    for node in ("augment", "step.mix")  # step.mix's copies interpolate augment's unless set by hand
    for alpha in ("mixup_alpha", "cutmix_alpha")
]


class MixUpCutMix(StepTrick):
    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.mix: v2.Transform | None = None

    @property
    def active(self) -> bool:
        return bool(self.mixup_alpha or self.cutmix_alpha)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        mixes = []
        num_classes = pl_module.hparams.num_classes
        if self.mixup_alpha:
            mixes.append(v2.MixUp(alpha=float(self.mixup_alpha), num_classes=num_classes))
        if self.cutmix_alpha:
            mixes.append(v2.CutMix(alpha=float(self.cutmix_alpha), num_classes=num_classes))
        self.mix = v2.RandomChoice(mixes) if len(mixes) > 1 else (mixes[0] if mixes else None)

    def batch(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mix(x, targets) if self.mix is not None else (x, targets)
