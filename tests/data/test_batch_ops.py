"""Whole-batch augmentation ops (data/batch_ops.py): each image gets its own random crop offset, flip, erased box
and rotation angle, recovered here from the output and checked against the configured ranges; the same seed
replays a batch; test-time augmentation averages the views it should; bad settings are one-line ConfigErrors."""

import math

import kornia
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from trickbench.data import BatchTransform
from trickbench.data.augment import check_augment
from trickbench.data.batch_ops import random_crop, random_erasing, random_hflip, random_rotation, rotate, tta_logits
from trickbench.errors import ConfigError


def coordinate_images(n: int, h: int, w: int) -> torch.Tensor:
    """n identical images whose pixel (i, j) holds i * w + j + 1: a pixel's value says where it came from."""
    return (torch.arange(h * w, dtype=torch.float32) + 1).view(1, 1, h, w).repeat(n, 2, 1, 1)


def binomial_tolerance(n: int, p: float) -> float:
    return 5 * math.sqrt(n * p * (1 - p))  # 5 standard deviations


# ---- random crop ---------------------------------------------------------------------------------------
def crop_offsets(out: torch.Tensor, padding: int) -> torch.Tensor:
    """Each image's (dy, dx) in the padded image, read from its centre pixel (inside the image at any offset)."""
    h, w = out.shape[-2:]
    source = out[:, 0, h // 2, w // 2].long() - 1
    return torch.stack([source // w - h // 2, source % w - w // 2], dim=1) + padding


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_each_image_is_cut_from_the_padded_image_at_its_own_offset(mode):
    torch.manual_seed(0)
    padding, x = 4, coordinate_images(256, 12, 16)
    out = random_crop(x, padding, mode)
    offsets = crop_offsets(out, padding)
    assert offsets.min() >= 0 and offsets.max() <= 2 * padding
    for axis in (0, 1):  # every offset occurs: uniform on 9 values, 256 draws
        assert set(offsets[:, axis].tolist()) == set(range(2 * padding + 1))
    padded = F.pad(x[:1], (padding,) * 4, mode=mode)[0]
    for img, (dy, dx) in zip(out, offsets.tolist(), strict=True):
        assert torch.equal(img, padded[:, dy : dy + 12, dx : dx + 16])


def test_reflect_fills_the_border_with_mirrored_pixels_where_constant_puts_zeros():
    x = coordinate_images(64, 8, 8)
    torch.manual_seed(1)
    zeros = random_crop(x, 3, "constant")
    torch.manual_seed(1)
    mirrored = random_crop(x, 3, "reflect")
    assert torch.equal(crop_offsets(zeros, 3), crop_offsets(mirrored, 3))  # the same draws
    border = zeros == 0
    shifted = (crop_offsets(zeros, 3) != 3).any(dim=1)
    assert border.flatten(1).any(dim=1).equal(shifted)  # every moved image shows padding, unmoved ones none
    assert (mirrored > 0).all()  # reflected pixels are image pixels
    assert torch.equal(mirrored[~border], zeros[~border])
    # mirrored about the edge row: an image moved 3 rows down shows its rows 3, 2, 1 above its row 0
    down = crop_offsets(mirrored, 3)[:, 0] == 0
    assert down.any() and torch.equal(mirrored[down, :, :3], mirrored[down, :, 4:7].flip(-2))


def test_zero_padding_crop_is_the_identity():
    x = torch.rand(4, 3, 8, 8)
    assert random_crop(x, 0) is x


# ---- horizontal flip -----------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.5, 0.2])
def test_a_fraction_p_of_images_is_flipped_and_the_rest_untouched(p):
    torch.manual_seed(0)
    n = 4000
    x = torch.rand(n, 2, 3, 5)
    out = random_hflip(x, p)
    flipped = (out == x.flip(-1)).flatten(1).all(dim=1)
    kept = (out == x).flatten(1).all(dim=1)
    assert (flipped ^ kept).all()  # each image exactly one of the two
    assert abs(flipped.sum().item() - n * p) < binomial_tolerance(n, p)


# ---- random erasing ------------------------------------------------------------------------------------
ERASED = -1.0  # outside the images' [0, 1): a pixel with this value was erased


def erased_boxes(out: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: erased or not, the erased fraction, the box's (height, width); checks the erased pixels form
    one box, the same in every channel, and the rest is untouched."""
    mask = out == ERASED
    assert torch.equal(torch.where(mask, ERASED, x), out)
    assert (mask == mask[:, :1]).all()
    mask = mask[:, 0]
    rows, cols = mask.any(dim=2).sum(dim=1), mask.any(dim=1).sum(dim=1)
    assert torch.equal(mask.sum(dim=(1, 2)), rows * cols)  # a filled rectangle: its rows times its columns
    return mask.flatten(1).any(dim=1), mask.flatten(1).float().mean(dim=1), torch.stack([rows, cols], dim=1)


def test_erased_box_area_and_aspect_ratio_stay_in_their_ranges():
    torch.manual_seed(0)
    n, h, w, scale = 2000, 40, 40, (0.02, 0.33)
    x = torch.rand(n, 1, h, w)
    erased, fraction, box = erased_boxes(random_erasing(x, 0.5, scale, (0.3, 3.3), ERASED), x)
    assert abs(erased.sum().item() - n / 2) < binomial_tolerance(n, 0.5)
    rounding = (0.5 * (h + w) + 0.25) / (h * w)  # height and width are each rounded by up to half a pixel
    fraction, aspect = fraction[erased], box[erased, 0] / box[erased, 1]
    assert fraction.min() >= scale[0] - rounding and fraction.max() <= scale[1] + rounding
    assert fraction.min() < scale[0] + 0.03 and fraction.max() > scale[1] - 0.03  # the whole range is drawn
    assert aspect.min() < 0.4 and aspect.max() > 2.5 and 0.8 < aspect.log().mean().exp() < 1.25  # log-uniform


def test_a_box_that_would_not_fit_gets_the_closest_ratio_that_does():
    # boxes of at least half the image at 3:1 or taller do not fit: torchvision would retry, here r is narrowed
    torch.manual_seed(0)
    x = torch.rand(500, 1, 40, 40)
    erased, fraction, box = erased_boxes(random_erasing(x, 1.0, (0.5, 0.9), (3.0, 10.0), ERASED), x)
    rounding = (0.5 * 80 + 0.25) / 1600
    assert erased.all() and fraction.min() >= 0.5 - rounding and fraction.max() <= 0.9 + rounding
    assert (box[:, 0] == 40).all()  # as tall as the image: the tallest box of that area


def test_erased_boxes_are_square_with_ratio_one_and_placed_uniformly():
    torch.manual_seed(0)
    n, h = 2000, 20
    x = torch.rand(n, 1, h, h)
    out = random_erasing(x, 1.0, (0.05, 0.2), (1.0, 1.0), ERASED)
    erased, _, box = erased_boxes(out, x)
    assert erased.all() and torch.equal(box[:, 0], box[:, 1])
    mask = out[:, 0] == ERASED
    for axis, size in ((2, box[:, 0]), (1, box[:, 1])):  # top row, then left column
        start = mask.any(dim=axis).float().argmax(dim=1)
        assert start.min() == 0 and (start + size).max() == h  # boxes touch every edge
        assert abs((start / (h - size)).mean().item() - 0.5) < 0.03  # uniform over where the box fits


def test_erasing_fills_with_the_configured_value():
    torch.manual_seed(0)
    x = torch.rand(50, 3, 16, 16) + 1
    out = random_erasing(x, 1.0, (0.1, 0.2), (0.5, 2.0), 0.25)
    filled = out == 0.25
    assert filled.flatten(1).any(dim=1).all() and set(out[out < 1].unique().tolist()) == {0.25}
    assert (filled == filled[:, :1]).all()  # the same box in every channel


# ---- rotation ------------------------------------------------------------------------------------------
def blob(n: int, size: int = 64, radius: float = 16.0) -> torch.Tensor:
    """A Gaussian spot `radius` pixels right of the image centre."""
    c = (size - 1) / 2
    i, j = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 2, indexing="ij")
    spot = torch.exp(-((i - c) ** 2 + (j - c - radius) ** 2) / (2 * 2.5**2))
    return spot.expand(n, 1, size, size).contiguous()


def spot_angles(images: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise angle (degrees, as displayed: rows grow downwards) of each image's centre of mass."""
    size = images.shape[-1]
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    mass = images[:, 0].sum(dim=(1, 2))
    row = (images[:, 0].sum(dim=2) * grid).sum(dim=1) / mass
    col = (images[:, 0].sum(dim=1) * grid).sum(dim=1) / mass
    return torch.rad2deg(torch.atan2(-row, col))


def test_rotation_by_zero_degrees_is_the_identity():
    x = torch.rand(8, 3, 16, 12)
    torch.testing.assert_close(random_rotation(x, 0.0), x, atol=1e-6, rtol=0)


def test_rotate_matches_kornias_convention():
    x = torch.rand(4, 2, 20, 28)
    angles = torch.tensor([0.0, 17.0, -45.0, 90.0])
    torch.testing.assert_close(rotate(x, angles), kornia.geometry.transform.rotate(x, angles), atol=1e-4, rtol=0)
    assert spot_angles(rotate(blob(1), torch.tensor([30.0]))).item() == pytest.approx(30, abs=1)


def test_each_image_turns_by_its_own_angle_within_the_bound():
    torch.manual_seed(0)
    angles = spot_angles(random_rotation(blob(500), 30.0))
    assert angles.abs().max() <= 30 + 1  # centre of mass after bilinear resampling: within a degree
    assert angles.min() < -27 and angles.max() > 27
    assert abs(angles.std().item() - 60 / math.sqrt(12)) < 2  # uniform on [-30, 30]: std 17.3


# ---- seeding -------------------------------------------------------------------------------------------
OPS = {
    "crop": lambda x: random_crop(x, 4, "reflect"),
    "hflip": random_hflip,
    "erasing": lambda x: random_erasing(x, 0.5, (0.02, 0.33), (0.3, 3.3)),
    "rotation": lambda x: random_rotation(x, 15.0),
}


@pytest.mark.parametrize("op", OPS.values(), ids=list(OPS))
def test_the_seed_alone_decides_the_batch(op):
    x = torch.rand(64, 3, 16, 16)

    def seeded(seed):
        torch.manual_seed(seed)
        return op(x)

    assert torch.equal(seeded(0), seeded(0))
    assert not torch.equal(seeded(0), seeded(1))


# ---- test-time augmentation ----------------------------------------------------------------------------
@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


def shift_down_right(x: torch.Tensor) -> torch.Tensor:
    """Content moved one pixel down and right; the new first row/column mirror row/column 1."""
    h, w = x.shape[-2:]
    rows, cols = torch.tensor([1, *range(h - 1)]), torch.tensor([1, *range(w - 1)])
    return x[..., rows, :][..., cols]


def shift_up_left(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    rows, cols = torch.tensor([*range(1, h), h - 2]), torch.tensor([*range(1, w), w - 2])
    return x[..., rows, :][..., cols]


def test_tta_averages_the_views_it_names(net):
    x = torch.rand(7, 3, 8, 8)
    assert torch.equal(tta_logits(net, x, None), net(x)) and torch.equal(tta_logits(net, x, "none"), net(x))

    def mirrored(v):
        return (net(v) + net(v.flip(-1))) / 2

    torch.testing.assert_close(tta_logits(net, x, "flip"), mirrored(x))
    want = 0.5 * mirrored(x) + 0.25 * mirrored(shift_down_right(x)) + 0.25 * mirrored(shift_up_left(x))
    torch.testing.assert_close(tta_logits(net, x, "flip_translate"), want)
    assert not torch.allclose(tta_logits(net, x, "flip_translate"), mirrored(x))
    with pytest.raises(ValueError):
        tta_logits(net, x, "mirror")


# ---- config: keys, errors, BatchTransform --------------------------------------------------------------
@pytest.mark.parametrize(
    "key,value",
    [("tta", "flips"), ("crop_padding_mode", "mirror"), ("crop_padding", -2), ("rotation", -5)],
)
def test_bad_values_are_one_line_config_errors(key, value):
    cfg = OmegaConf.create({key: value})
    for check in (check_augment, lambda c: BatchTransform("none", c)):
        with pytest.raises(ConfigError) as err:
            check(cfg)
        message = str(err.value)
        assert message.startswith(f"augment.{key}={value!r}: ") and "\n" not in message


def test_bad_erasing_settings_are_config_errors():
    erasing = {"p": 0.5, "scale": [0.02, 1.5], "ratio": [0.3, 3.3], "value": 0.0}
    with pytest.raises(ConfigError, match=r"^augment\.erasing\.scale="):
        check_augment(OmegaConf.create({"erasing": erasing}))


def test_reflect_padding_must_be_smaller_than_the_image():
    cfg = OmegaConf.create({"crop_padding": 8, "crop_padding_mode": "reflect"})
    with pytest.raises(ConfigError, match=r"^augment\.crop_padding=8: less than the image size"):
        BatchTransform("none", cfg, (8, 8))


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_crop_padding_mode_reaches_the_crop(mode):
    torch.manual_seed(0)
    x = torch.randint(1, 256, (1, 3, 16, 16), dtype=torch.uint8).expand(64, -1, -1, -1)
    cfg = OmegaConf.create({"crop_padding": 4, "crop_padding_mode": mode})
    out = BatchTransform("none", cfg, (16, 16))(x, train=True)
    assert (out == 0).any().item() == (mode == "constant")


def test_stats_are_buffers_that_follow_the_batch():
    transform = BatchTransform("standardize", None, (4, 4), [0.5] * 3, [0.25] * 3)
    assert {"mean", "std"} <= dict(transform.named_buffers()).keys() and not transform.state_dict()
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = transform(x, train=False)
    assert torch.equal(out, torch.full((2, 3, 4, 4), 2.0))
    out = transform(x.to("meta"), train=False)  # a device other than the stats': they move to it
    assert out.device.type == transform.mean.device.type == transform.std.device.type == "meta"
