"""trick=mixup and trick=cutmix (tricks/mixing.py): a mixed batch is a convex combination of images and one-hot targets
(mixup) or a pasted box whose area sets the targets (CutMix); both on, one per batch; training only."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import augment, datamodule

from trickbench.data import ImageDataModule
from trickbench.tricks.mixing import MixUpCutMix

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def training_batch(dm: ImageDataModule, batch, step: int):
    """The batch as the training step sees it at a global step: from the datamodule, then mixed (tricks/mixing.py):
    (images, labels) or (mixed images, labels, soft targets)."""
    dm.trainer = SimpleNamespace(training=True, global_step=step, global_rank=0)
    x, y = dm.on_after_batch_transfer(batch, 0)
    mix = MixUpCutMix(dm.augment_cfg.get("mixup_alpha"), dm.augment_cfg.get("cutmix_alpha"))
    if not mix.active:
        return x, y
    mix.setup(None, SimpleNamespace(hparams=SimpleNamespace(num_classes=dm.num_classes)), "fit")
    mixed, soft = mix.batch(x, y)
    return mixed, y, soft


def partner_of(x: torch.Tensor, mixed: torch.Tensor, lam: float) -> list[int]:
    """For each image, the index of the image it was mixed with: (mixed - lam * x) / (1 - lam) is that image."""
    other = (mixed - lam * x) / (1 - lam)
    distances = torch.cdist(other.flatten(1), x.flatten(1))
    return distances.argmin(dim=1).tolist()


@pytest.fixture(scope="module")
def cifar_batch(cifar_folder, tmp_path_factory):
    dm = datamodule("cifar10", cifar_folder, tmp_path_factory.mktemp("data"))
    return next(iter(dm.train_dataloader()))


def test_mixup_is_a_convex_combination_of_images_and_one_hot_targets(cifar_folder, cifar_batch, tmp_path):
    # alpha 1 (uniform lam) in place of trick=mixup's 0.2, whose lam is often within 1e-4 of 0 or 1
    mix = augment("trick=mixup", "augment.mixup_alpha=1.0")
    dm = datamodule("cifar10", cifar_folder, tmp_path, augment=mix, normalize="minus_one_one")
    x, y = cifar_batch
    plain = dm.transform(x, train=False)
    lams = set()
    for step in range(3):
        mixed, labels, soft = training_batch(dm, (x, y), step)
        assert torch.equal(labels, y)  # the original labels, for train accuracy
        onehot = F.one_hot(y, 10).float()
        # lam from the soft targets: the weight left on an image's own label when its partner's label differs
        own = soft[torch.arange(len(y)), y]
        lam = float(own[(own > 0) & (own < 1)][0])
        perm = partner_of(plain, mixed, lam)
        assert sorted(perm) == list(range(len(y))) and perm != list(range(len(y)))
        torch.testing.assert_close(mixed, lam * plain + (1 - lam) * plain[perm])
        torch.testing.assert_close(soft, lam * onehot + (1 - lam) * onehot[perm])
        lams.add(round(lam, 6))
    assert len(lams) == 3  # a new lam every batch
    dm.trainer.training = False
    val = dm.on_after_batch_transfer((x, y), 0)
    assert len(val) == 2 and torch.equal(val[0], plain) and torch.equal(val[1], y)


def test_cutmix_pastes_a_box_whose_area_sets_the_targets(fmnist_mirror, tmp_path):
    dm = datamodule("fashion_mnist", fmnist_mirror, tmp_path, augment=augment("trick=cutmix"))
    n = 16
    x = torch.arange(n, dtype=torch.uint8).mul(10).view(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()
    y = torch.arange(n) % 10
    for step in range(3):
        mixed, labels, soft = training_batch(dm, (x, y), step)
        source = mixed.mul(255).round().div(10).long()[:, 0]  # which image each pixel came from
        pasted = source != torch.arange(n).view(n, 1, 1)
        assert torch.equal(labels, y)
        for i in range(n):
            rows, cols = pasted[i].any(dim=1).nonzero(), pasted[i].any(dim=0).nonzero()
            if len(rows):  # the pasted pixels fill one rectangle, all from one other image
                box = pasted[i, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
                assert box.all() and pasted[i].sum() == box.numel()
                assert len(source[i][pasted[i]].unique()) == 1
        area = pasted.flatten(1).float().mean(dim=1)
        lam = 1 - float(area[0])
        assert torch.allclose(area, torch.full_like(area, 1 - lam))  # one box size per batch
        partner = [int(source[i][pasted[i]][0]) if pasted[i].any() else (i - 1) % n for i in range(n)]
        expected = lam * F.one_hot(y, 10).float() + (1 - lam) * F.one_hot(y[partner], 10).float()
        torch.testing.assert_close(soft, expected)


def test_mixup_and_cutmix_together_choose_one_per_batch(fmnist_mirror, tmp_path):
    mix = augment("trick=[mixup,cutmix]", "augment.mixup_alpha=1.0")  # lam away from 0 and 1: off the grid
    dm = datamodule("fashion_mnist", fmnist_mirror, tmp_path, augment=mix)
    n = 16
    x = torch.arange(n, dtype=torch.uint8).mul(10).view(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()
    y = torch.arange(n) % 10
    kinds = set()
    for step in range(12):
        mixed = training_batch(dm, (x, y), step)[0]
        on_grid = torch.allclose(mixed * 25.5, (mixed * 25.5).round(), atol=1e-4)  # CutMix only copies pixels
        kinds.add("cutmix" if on_grid else "mixup")
    assert kinds == {"mixup", "cutmix"}
