"""Batch-wise input pipeline, run on the batch's device after transfer: uint8 -> float in [0,1] ->
training-only augmentation (kornia: random parameters per sample) -> normalization."""

import kornia.augmentation as K
import torch
from torch import nn

from trickbench.errors import ConfigError

NORMALIZE_MODES = ("none", "minus_one_one", "standardize")


def build_augmentation(cfg, image_size: tuple[int, int]) -> nn.Module | None:
    """conf/augment: crop_padding (int), hflip (bool), rotation (degrees), erasing ({p, scale, ratio, value}/null)."""
    ops: list[nn.Module] = []
    if cfg.get("crop_padding"):
        ops.append(K.RandomCrop(image_size, padding=int(cfg["crop_padding"])))
    if cfg.get("hflip"):
        ops.append(K.RandomHorizontalFlip())
    if cfg.get("rotation"):
        ops.append(K.RandomRotation(float(cfg["rotation"])))
    if cfg.get("erasing"):
        e = cfg["erasing"]
        ops.append(
            K.RandomErasing(scale=tuple(e["scale"]), ratio=tuple(e["ratio"]), value=float(e["value"]), p=float(e["p"]))
        )
    return nn.Sequential(*ops) if ops else None


class BatchTransform(nn.Module):
    def __init__(self, normalize: str, augment_cfg=None, image_size=(32, 32), mean=None, std=None):
        super().__init__()
        if normalize not in NORMALIZE_MODES:
            raise ConfigError("data.normalize", normalize, f"one of {list(NORMALIZE_MODES)}")
        self.normalize = normalize
        self.augment = build_augmentation(augment_cfg or {}, image_size)
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        x = x.float().div_(255)
        if train and self.augment is not None:
            x = self.augment(x)
        if self.normalize == "minus_one_one":
            return x.mul_(2).sub_(1)
        if self.normalize == "standardize":
            if self.mean.device != x.device:
                self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
            return (x - self.mean) / self.std
        return x


@torch.no_grad()
def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 N,C,H,W images, scaled to [0,1], accumulated in float64."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double().div_(255)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (total_sq / n - mean.square()).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()
