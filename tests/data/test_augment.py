"""The batch pipeline of data/augment.py (BatchTransform): the fixed normalizations; augmentation per sample while
training and never on eval batches; the augmentations Bag of Tricks adds: color jitter (per-sample factors; brightness
and contrast only on grayscale) and PCA lighting (the train split's eigenvectors, one offset per image); bad augment
values fail before data is read."""

import pytest
import torch
from conftest import augment, augment_cfg, datamodule, key, learnable_images
from omegaconf import OmegaConf

from trickbench.data import BatchTransform, ImageDataModule
from trickbench.data.augment import PCALighting
from trickbench.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


@pytest.mark.parametrize(
    "key,value",
    [
        ("mixup_alpha", -0.1),
        ("cutmix_alpha", -1),
        ("pca_lighting", -0.1),
        ("color_jitter", {"brightness": 1.5}),
        ("color_jitter", {"hue": 0.6}),
        ("color_jitter", {"gamma": 0.1}),
    ],
)
def test_bad_augment_values_fail_before_data_is_read(key, value, tmp_path):
    cfg = OmegaConf.merge(augment(), {key: value})
    dm = ImageDataModule("cifar10", source=str(tmp_path / "absent"), root=str(tmp_path), augment=cfg)
    with pytest.raises(ConfigError) as err:  # the absent source would be the error once data is read
        dm.prepare_data()
    assert str(err.value).startswith(f"augment.{key}")
    with pytest.raises(ConfigError) as err:
        BatchTransform("none", cfg)
    assert str(err.value).startswith(f"augment.{key}")


def jitter_of(transform: BatchTransform):
    return next(m for m in transform.augment if type(m).__name__ == "ColorJitter")


def test_color_jitter_factors_are_per_sample_within_0_6_and_1_4():
    transform = BatchTransform("none", augment("augment=color_jitter"), (32, 32))
    x, _ = learnable_images(64, (3, 32, 32), 0)
    transform(x, train=True)
    params = jitter_of(transform)._params
    for name in ("brightness_factor", "contrast_factor", "saturation_factor"):
        factors = params[name]
        assert len(factors) == 64 and factors.min() >= 0.6 and factors.max() <= 1.4
        assert factors.std() > 0.1  # drawn per image: uniform on [0.6, 1.4] has std 0.23
    assert torch.equal(params["hue_factor"], torch.zeros(64))


def test_brightness_jitter_scales_each_image_by_its_own_factor():
    cfg = OmegaConf.merge(augment(), {"color_jitter": {"brightness": 0.4}})
    transform = BatchTransform("none", cfg, (32, 32))
    x = torch.randint(0, 128, (32, 3, 32, 32), dtype=torch.uint8)  # <= 0.5: x 1.4 is not clamped
    out = transform(x, train=True)
    ratio = out.sum(dim=(1, 2, 3)) / x.float().div(255).sum(dim=(1, 2, 3))
    assert ratio.min() >= 0.6 - 1e-5 and ratio.max() <= 1.4 + 1e-5 and ratio.std() > 0.1
    torch.testing.assert_close(ratio, jitter_of(transform)._params["brightness_factor"])


def test_color_jitter_on_grayscale_keeps_brightness_and_contrast_only():
    lighting = (torch.tensor([0.01]), torch.ones(1, 1))
    transform = BatchTransform("none", augment("augment=baseline"), (28, 28), channels=1, lighting=lighting)
    out = transform(learnable_images(32, (1, 28, 28), 0)[0], train=True)
    assert out.shape == (32, 1, 28, 28)
    params = jitter_of(transform)._params
    assert params["brightness_factor"].std() > 0.1
    assert torch.equal(params["saturation_factor"], torch.ones(32))
    assert torch.equal(params["hue_factor"], torch.zeros(32))


def pixel_covariance(images: torch.Tensor) -> torch.Tensor:
    pixels = images.double().div(255).transpose(0, 1).flatten(1)
    return torch.cov(pixels, correction=0).reshape(len(pixels), len(pixels))  # 1 channel: cov gives a scalar


@pytest.mark.parametrize("name,mirror", [("cifar10", "cifar_folder"), ("fashion_mnist", "fmnist_mirror")])
def test_pca_lighting_uses_the_train_splits_eigenvectors(name, mirror, request, tmp_path):
    dm = datamodule(name, request.getfixturevalue(mirror), tmp_path, augment=augment("augment=pca_lighting"))
    eigval = torch.tensor(dm.info["pca_lighting"]["eigval"], dtype=torch.float64)
    eigvec = torch.tensor(dm.info["pca_lighting"]["eigvec"], dtype=torch.float64)
    want_val, want_vec = torch.linalg.eigh(pixel_covariance(dm.train_set.x))
    torch.testing.assert_close(eigval, want_val, rtol=1e-5, atol=1e-7)
    # eigenvectors are defined up to sign
    torch.testing.assert_close((eigvec * want_vec).sum(dim=0).abs(), torch.ones(len(eigval), dtype=torch.float64))
    other_splits = torch.linalg.eigvalsh(pixel_covariance(torch.cat([dm.val_set.x, dm.test_set.x])))
    assert not torch.allclose(eigval, other_splits, rtol=1e-3)
    lighting = next(m for m in dm.transform.augment if isinstance(m, PCALighting))
    assert torch.equal(lighting.eigval, eigval.float()) and torch.equal(lighting.eigvec, eigvec.float())


def test_pca_lighting_adds_one_offset_per_image_along_the_eigenvectors():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    eigval = torch.tensor([0.002, 0.01, 0.05])
    lighting = PCALighting(0.1, eigval, q)
    x = torch.rand(4000, 3, 4, 4)
    offset = lighting(x) - x
    per_image = offset[:, :, :1, :1]
    torch.testing.assert_close(offset, per_image.expand_as(offset), atol=1e-6, rtol=0)  # constant over pixels
    # the offset is eigvec @ (alpha * eigval): recover alpha, which is N(0, 0.1) per image and eigenvector
    alpha = (per_image.flatten(1).double() @ q.double()) / eigval.double()
    assert alpha.std(dim=0).sub(0.1).abs().max() < 0.006  # std error of the std: 0.1 / sqrt(2 * 4000) = 0.0011
    assert alpha.mean(dim=0).abs().max() < 0.008
    assert torch.corrcoef(alpha.T).sub(torch.eye(3, dtype=torch.float64)).abs().max() < 0.06


# ---- normalization -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mode,expected", [("minus_one_one", [-1.0, -0.6, 1.0]), ("none", [0.0, 0.2, 1.0])], ids=["minus_one_one", "none"]
)
def test_fixed_normalizations(mode, expected):
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    out = BatchTransform(mode)(x, train=False)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor(expected))
    assert out.flatten()[0] == expected[0] and out.flatten()[-1] == expected[-1]  # endpoints exact


# ---- per-sample augmentation, training batches only ----------------------------------------------------
AUGMENTS = {"crop_flip": {}, "rotation": {}, "erasing": {"p": 1.0}, "full": {}}
STATS = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}


def one_image_batch(n=16) -> torch.Tensor:
    x, _ = learnable_images(1, (3, 32, 32), 0)
    return x.expand(n, -1, -1, -1).contiguous()


@pytest.mark.parametrize("aug", AUGMENTS, ids=list(AUGMENTS))
def test_augmentation_is_per_sample_in_training(aug):
    torch.manual_seed(0)
    x = one_image_batch()
    out = BatchTransform("none", augment_cfg(aug, **AUGMENTS[aug]), (32, 32))(x, train=True)
    assert out.shape == x.shape
    assert len({key(o) for o in out}) >= 2


@pytest.mark.parametrize("normalize", ["none", "minus_one_one", "standardize"])
@pytest.mark.parametrize("aug", ["none", *AUGMENTS], ids=["none", *AUGMENTS])
def test_eval_batches_are_not_augmented(aug, normalize):
    x = one_image_batch()
    stats = STATS if normalize == "standardize" else {}
    plain = BatchTransform(normalize, None, (32, 32), **stats)(x, train=False)
    assert torch.equal(
        BatchTransform(normalize, augment_cfg(aug, **AUGMENTS.get(aug, {})), (32, 32), **stats)(x, train=False), plain
    )
    if normalize == "none":
        assert torch.equal(plain, x.float() / 255)


def test_no_augment_leaves_training_batches_unchanged():
    x = one_image_batch()
    assert torch.equal(BatchTransform("none", augment_cfg("none"), (32, 32))(x, train=True), x.float() / 255)
