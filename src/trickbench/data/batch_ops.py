"""Whole-batch augmentation on float N,C,H,W tensors, random per image. Every op is a few tensor ops on the
batch's device that draw from torch's default generator there (the datamodule seeds it per step), with no
Python loop over images and no value read back to the host, so a GPU never waits on the CPU."""

import math

import torch
import torch.nn.functional as F

TTA_MODES = ("none", "flip", "flip_translate")


def random_crop(x: torch.Tensor, padding: int, mode: str = "constant") -> torch.Tensor:
    """Pad by `padding` (zeros, or mirrored pixels with mode="reflect"), then cut each image's H x W window at
    its own offset (dy, dx) uniform in [0, 2 * padding]: a translation by up to `padding` pixels."""
    if not padding:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode=mode)
    offsets = torch.randint(0, 2 * padding + 1, (2, n, 1), device=x.device)
    rows = offsets[0] + torch.arange(h, device=x.device)
    cols = offsets[1] + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channels, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    flip = torch.rand(len(x), device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_erasing(
    x: torch.Tensor, p: float, scale: tuple[float, float], ratio: tuple[float, float], value: float = 0.0
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): with probability p per image, a box of area s * H * W, s ~ U(scale),
    aspect ratio height/width r with log r ~ U(log ratio), at a uniform position where it fits, set to value."""
    n, _, h, w = x.shape
    u = torch.rand(5, n, device=x.device)
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * (h * w)
    # torchvision/kornia redraw a box that does not fit (up to 10 times); instead log r is drawn from the part of
    # the ratio range where it fits (h <= H, w <= W), so every box has area s*H*W up to rounding
    fit_low, fit_high = torch.log(area / w**2), torch.log(h**2 / area)
    low = torch.full_like(area, math.log(ratio[0])).clamp(fit_low, fit_high)
    high = torch.full_like(area, math.log(ratio[1])).clamp(fit_low, fit_high)
    aspect = torch.exp(low + (high - low) * u[1])
    box_h = (area * aspect).sqrt().round().clamp(max=h)
    box_w = (area / aspect).sqrt().round().clamp(max=w)
    top = (u[2] * (h - box_h + 1)).floor()[:, None, None]
    left = (u[3] * (w - box_w + 1)).floor()[:, None, None]
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + box_h[:, None, None]) & (cols >= left) & (cols < left + box_w[:, None, None])
    erase = inside & (u[4] < p)[:, None, None]
    return torch.where(erase[:, None], value, x)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate image i by degrees[i] about its centre, counter-clockwise as displayed (kornia's rotate);
    bilinear, zeros outside."""
    n, _, h, w = x.shape
    radians = torch.deg2rad(degrees.to(torch.float32))
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    # affine_grid maps output to input in [-1, 1] coordinates: the aspect factors keep the rotation rigid in pixels
    theta = torch.stack(
        [torch.stack([cos, -sin * (h / w), zero], dim=1), torch.stack([sin * (w / h), cos, zero], dim=1)], dim=1
    )
    grid = F.affine_grid(theta.to(x.dtype), [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_rotation(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Each image rotated by its own angle, uniform in [-degrees, degrees]."""
    return rotate(x, (torch.rand(len(x), device=x.device) * 2 - 1) * degrees)


def tta_logits(net, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """Test-time augmentation, averaged logits. "flip": mean of the image and its mirror image. "flip_translate"
    (airbench's level 2): 1/2 that mean on the image, 1/4 each on the image shifted by one pixel down-right and
    up-left (reflected border)."""
    if mode in (None, "none"):
        return net(x)
    if mode not in TTA_MODES:
        raise ValueError(f"tta mode {mode!r}: one of {list(TTA_MODES)}")
    views, weights = [x], [1.0]
    if mode == "flip_translate":
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        views, weights = [x, padded[..., :h, :w], padded[..., 2:, 2:]], [0.5, 0.25, 0.25]
    batch = torch.cat(views)
    # one forward over every view: one large batch keeps the device busier than several small ones
    logits = net(torch.cat([batch, batch.flip(-1)])).unflatten(0, (2, len(views), len(x))).mean(dim=0)
    return sum(weight * view_logits for weight, view_logits in zip(weights, logits, strict=True))
