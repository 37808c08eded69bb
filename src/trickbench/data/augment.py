"""Batch-wise input pipeline, run on the batch's device after transfer: uint8 -> float in [0,1] ->
training-only augmentation (batch_ops.py: whole-batch tensor ops, random parameters per sample) ->
normalization -> training-only mixup/CutMix (torchvision: one mixing weight per batch, soft targets)."""

import logging

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.transforms import v2

from trickbench.data import batch_ops
from trickbench.data.batch_ops import TTA_MODES
from trickbench.errors import ConfigError, is_int, is_number

log = logging.getLogger(__name__)

NORMALIZE_MODES = ("none", "minus_one_one", "standardize")
CROP_PADDING_MODES = ("constant", "reflect")
# color_jitter key -> its largest value: brightness/contrast/saturation factors are drawn from [1 - v, 1 + v],
# the hue shift from [-v, v] turns of the color wheel
JITTER_LIMITS = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.5}


def _number_in(v, low: float, high: float = float("inf")) -> bool:
    return is_number(v) and low <= v <= high


def _is_range(v, low: float, high: float = float("inf")) -> bool:
    return v is not None and len(v) == 2 and all(_number_in(b, low, high) for b in v) and v[0] <= v[1]


def check_augment(cfg) -> None:
    """The conf/augment values these ops take, checked before any data is read."""
    for key in ("mixup_alpha", "cutmix_alpha", "pca_lighting", "rotation"):
        value = cfg.get(key) or 0
        if not _number_in(value, 0):
            raise ConfigError(f"augment.{key}", value, "a number >= 0 (0: off)")
    padding = cfg.get("crop_padding") or 0
    if not is_int(padding) or padding < 0:
        raise ConfigError("augment.crop_padding", padding, "an integer >= 0 (0: off)")
    for key, allowed, default in (("crop_padding_mode", CROP_PADDING_MODES, "constant"), ("tta", TTA_MODES, "none")):
        if (cfg.get(key) or default) not in allowed:
            raise ConfigError(f"augment.{key}", cfg.get(key), f"one of {list(allowed)}")
    jitter = cfg.get("color_jitter") or {}
    for key in jitter:
        if key not in JITTER_LIMITS:
            raise ConfigError(f"augment.color_jitter.{key}", jitter[key], f"not a key; keys: {list(JITTER_LIMITS)}")
        if not _number_in(jitter[key], 0, JITTER_LIMITS[key]):
            raise ConfigError(f"augment.color_jitter.{key}", jitter[key], f"a number in [0, {JITTER_LIMITS[key]}]")
    erasing = cfg.get("erasing") or {}
    for key, ok, allowed in (
        ("p", lambda v: _number_in(v, 0, 1), "a number in [0, 1]"),
        ("scale", lambda v: _is_range(v, 1e-6, 1), "[low, high] with 0 < low <= high <= 1 (fractions of the image)"),
        ("ratio", lambda v: _is_range(v, 1e-6), "[low, high] with 0 < low <= high (height / width)"),
        ("value", is_number, "a number (pixel value in [0, 1] space)"),
    ):
        if erasing and not ok(erasing.get(key)):
            raise ConfigError(f"augment.erasing.{key}", erasing.get(key), allowed)


class BatchOp(nn.Module):
    """A batch_ops function with its settings, as a module, so that nn.Sequential chains it with kornia's."""

    def __init__(self, op, **settings):
        super().__init__()
        self.op, self.settings = op, settings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, **self.settings)

    def extra_repr(self) -> str:
        return ", ".join([self.op.__name__, *(f"{k}={v!r}" for k, v in self.settings.items())])


def build_augmentation(cfg, image_size: tuple[int, int], channels: int = 3, lighting=None) -> nn.Module | None:
    """conf/augment: crop_padding (int), crop_padding_mode (constant/reflect), hflip (bool), rotation (degrees),
    color_jitter ({brightness, contrast, saturation, hue}/null), pca_lighting (std of alpha; needs
    lighting=(eigval, eigvec) of the train split), erasing ({p, scale, ratio, value}/null)."""
    check_augment(cfg)
    ops: list[nn.Module] = []
    if cfg.get("crop_padding"):
        padding, mode = int(cfg["crop_padding"]), cfg.get("crop_padding_mode") or "constant"
        if mode == "reflect" and padding >= min(image_size):
            allowed = f"less than the image size {tuple(image_size)} with crop_padding_mode=reflect"
            raise ConfigError("augment.crop_padding", padding, allowed)
        ops.append(BatchOp(batch_ops.random_crop, padding=padding, mode=mode))
    if cfg.get("hflip"):
        ops.append(BatchOp(batch_ops.random_hflip))
    if cfg.get("rotation"):
        ops.append(BatchOp(batch_ops.random_rotation, degrees=float(cfg["rotation"])))
    jitter = {k: float(v) for k, v in (cfg.get("color_jitter") or {}).items() if v}
    if channels != 3 and {"saturation", "hue"} & jitter.keys():
        log.info("color_jitter: saturation and hue need RGB images; on %d channel(s) they are skipped", channels)
        jitter = {k: v for k, v in jitter.items() if k not in ("saturation", "hue")}
    if jitter:  # still kornia's (per-sample params drawn on the host): only the baseline/color_jitter presets use it
        ops.append(K.ColorJitter(**jitter, p=1.0))
    if cfg.get("pca_lighting"):
        if lighting is None:
            raise ValueError("pca_lighting needs the train split's channel eigenvalues and eigenvectors")
        ops.append(PCALighting(float(cfg["pca_lighting"]), *lighting))
    if cfg.get("erasing"):
        e = cfg["erasing"]
        box = {"scale": tuple(map(float, e["scale"])), "ratio": tuple(map(float, e["ratio"]))}
        ops.append(BatchOp(batch_ops.random_erasing, p=float(e["p"]), **box, value=float(e["value"])))
    return nn.Sequential(*ops) if ops else None


def build_mixing(cfg, num_classes: int) -> nn.Module | None:
    """mixup (augment.mixup_alpha) and CutMix (augment.cutmix_alpha): (x, y) -> (mixed x, soft targets), one
    Beta(alpha, alpha) weight per batch, each image mixed with its neighbour in the shuffled batch. With both
    alphas > 0, each batch gets one of the two, chosen at random (as timm and torchvision's references do)."""
    mixes = []
    if cfg.get("mixup_alpha"):
        mixes.append(v2.MixUp(alpha=float(cfg["mixup_alpha"]), num_classes=num_classes))
    if cfg.get("cutmix_alpha"):
        mixes.append(v2.CutMix(alpha=float(cfg["cutmix_alpha"]), num_classes=num_classes))
    if len(mixes) > 1:
        return v2.RandomChoice(mixes)
    return mixes[0] if mixes else None


class PCALighting(nn.Module):
    """AlexNet's lighting noise (Krizhevsky et al. 2012): every pixel of an image gets the same offset
    eigvec @ (alpha * eigval), alpha ~ N(0, std) drawn per image and per eigenvector of the train split's
    channel covariance. Written by hand: kornia has no PCA lighting. Unclamped, as in AlexNet. On one
    channel it is an intensity offset alpha * variance."""

    def __init__(self, std: float, eigval, eigvec):
        super().__init__()
        self.std = std
        self.register_buffer("eigval", torch.as_tensor(eigval, dtype=torch.float32), persistent=False)
        self.register_buffer("eigvec", torch.as_tensor(eigvec, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(len(x), len(self.eigval), device=x.device) * self.std
        offset = (alpha * self.eigval) @ self.eigvec.T  # eigenvectors are columns
        return x + offset[:, :, None, None]


class BatchTransform(nn.Module):
    def __init__(
        self,
        normalize: str,
        augment_cfg=None,
        image_size=(32, 32),
        mean=None,
        std=None,
        *,
        channels: int = 3,
        num_classes: int = 10,
        lighting=None,
    ):
        super().__init__()
        if normalize not in NORMALIZE_MODES:
            raise ConfigError("data.normalize", normalize, f"one of {list(NORMALIZE_MODES)}")
        self.normalize = normalize
        self.augment = build_augmentation(augment_cfg or {}, image_size, channels, lighting)
        self.mix = build_mixing(augment_cfg or {}, num_classes)  # the datamodule applies it to training batches
        for name, stat in (("mean", mean), ("std", std)):
            stat = None if stat is None else torch.as_tensor(stat, dtype=torch.float32).view(1, -1, 1, 1)
            self.register_buffer(name, stat, persistent=False)

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        buffer = next(self.buffers(), None)
        if buffer is not None and buffer.device != x.device:  # device metadata, read on the host: no sync
            self.to(x.device)
        x = x.float().div_(255)
        if train and self.augment is not None:
            x = self.augment(x)
        if self.normalize == "minus_one_one":
            return x.mul_(2).sub_(1)
        if self.normalize == "standardize":
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


@torch.no_grad()
def channel_eigen(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of the C x C covariance of the pixel values of uint8
    N,C,H,W images, scaled to [0,1] and accumulated in float64: the directions of PCA lighting."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    outer = torch.zeros(c, c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        pixels = images[start : start + chunk].double().div_(255).transpose(0, 1).reshape(c, -1)
        total += pixels.sum(dim=1)
        outer += pixels @ pixels.T
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    eigval, eigvec = torch.linalg.eigh(outer / n - torch.outer(mean, mean))
    return eigval.clamp_min(0).float(), eigvec.float()
