"""Batch-wise input pipeline, run on the batch's device after transfer: uint8 -> float in [0,1] ->
training-only augmentation (batch_ops.py: whole-batch tensor ops, random parameters per sample) ->
normalization. mixup/CutMix mix the batch inside the training step (tricks/mixing.py)."""

import logging

import kornia.augmentation as K
import torch
from torch import nn

from trickbench.data import batch_ops
from trickbench.data.batch_ops import TTA_MODES
from trickbench.errors import ConfigError
from trickbench.rules import NodeCheck, Rule, boolean, check, integer, mapping, nonnegative, number, one_of, optional
from trickbench.tricks import mixing

log = logging.getLogger(__name__)

NORMALIZE_MODES = ("none", "minus_one_one", "standardize")
CROP_PADDING_MODES = ("constant", "reflect")
# color_jitter key -> its largest value: brightness/contrast/saturation factors are drawn from [1 - v, 1 + v],
# the hue shift from [-v, v] turns of the color wheel
JITTER_LIMITS = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.5}


def _is_range(low: float, high: float = float("inf")):
    number_in = number(low, high)
    return lambda v: v is not None and len(v) == 2 and all(number_in(b) for b in v) and v[0] <= v[1]


def _check_color_jitter(jitter, cfg=None) -> None:
    """augment.color_jitter's keys, one by one: the error names the key."""
    if not mapping(jitter):
        raise ConfigError("augment.color_jitter", jitter, f"null (off) or a mapping of {list(JITTER_LIMITS)}")
    for k, v in jitter.items():
        if k not in JITTER_LIMITS:
            raise ConfigError(f"augment.color_jitter.{k}", v, f"not a key; keys: {list(JITTER_LIMITS)}")
        if not number(0, JITTER_LIMITS[k])(v):
            raise ConfigError(f"augment.color_jitter.{k}", v, f"a number in [0, {JITTER_LIMITS[k]}]")


# the conf/augment values these ops take (null: off); mixup/CutMix's are tricks/mixing.py's
RULES = [
    Rule("augment.pca_lighting", optional(nonnegative), "a number >= 0 (0: off)"),
    Rule("augment.rotation", optional(nonnegative), "a number >= 0 (0: off)"),
    Rule("augment.crop_padding", optional(integer(0)), "an integer >= 0 (0: off)"),
    Rule("augment.crop_padding_mode", optional(one_of(CROP_PADDING_MODES)), f"one of {list(CROP_PADDING_MODES)}"),
    Rule("augment.tta", optional(one_of(TTA_MODES)), f"one of {list(TTA_MODES)}"),
    Rule("augment.hflip", boolean, "true or false"),
    Rule("augment.erasing", optional(mapping), "null (off) or a mapping of p, scale, ratio and value"),
    Rule("augment.erasing.p", number(0, 1), "a number in [0, 1]"),
    Rule("augment.erasing.scale", _is_range(1e-6, 1), "[low, high] with 0 < low <= high <= 1 (fractions of the image)"),
    Rule("augment.erasing.ratio", _is_range(1e-6), "[low, high] with 0 < low <= high (height / width)"),
    Rule("augment.erasing.value", number(), "a number (pixel value in [0, 1] space)"),
    NodeCheck("augment.color_jitter", _check_color_jitter, whole=True),
    Rule("data.normalize", one_of(NORMALIZE_MODES), f"one of {list(NORMALIZE_MODES)}"),
]


def check_augment(cfg) -> None:
    """The conf/augment values, checked before any data is read: these ops' and mixup/CutMix's (a step trick)."""
    check({"augment": cfg or {}}, [r for r in [*RULES, *mixing.RULES] if r.key.startswith("augment.")])


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
        lighting=None,
    ):
        super().__init__()
        check({"data": {"normalize": normalize}}, RULES)
        self.normalize = normalize
        self.augment = build_augmentation(augment_cfg or {}, image_size, channels, lighting)
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
