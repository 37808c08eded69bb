"""ImageDataModule (data/datamodule.py): the seeded train/val split and subsets, config errors from prepare_data,
standardization with the train split's statistics, and the batch hook that augments only while training."""

from types import SimpleNamespace

import pytest
import torch
from conftest import LAYOUTS, N_TEST, N_TRAIN, augment_cfg, key, learnable_images, loaded, make_dm

from trickbench.errors import ConfigError


# ---- split ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "subset,val_size,sizes",
    [(None, 20, (180, 20, 60)), (100, 30, (70, 30, 60)), (50, 10, (40, 10, 50))],
    ids=["full", "subset100", "subset50"],
)
def test_split_sizes_and_disjoint(subset, val_size, sizes, fmnist_mirror, tmp_path):
    dm = loaded("fashion_mnist", fmnist_mirror, tmp_path, subset=subset, val_size=val_size)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == sizes
    train, val = {key(x) for x in dm.train_set.x}, {key(x) for x in dm.val_set.x}
    assert len(train) == sizes[0] and len(val) == sizes[1]  # mirror images are unique, so no duplicates
    assert not train & val


def test_test_subset_is_drawn_across_classes(cifar_folder, tmp_path):
    # the ImageFolder test split is stored sorted by class: its first 20 images hold only 4 classes
    dm = loaded("cifar10", cifar_folder, tmp_path, subset=20, val_size=5)
    x, _ = learnable_images(N_TEST, (3, 32, 32), 1)
    assert len(dm.test_set) == 20
    assert {key(img) for img in dm.test_set.x} <= {key(img) for img in x}
    assert len(set(dm.test_set.y.tolist())) >= 6


def test_split_depends_on_split_seed_only(fmnist_mirror, tmp_path):
    base = loaded("fashion_mnist", fmnist_mirror, tmp_path, split_seed=0, seed=0)
    other_seed = loaded("fashion_mnist", fmnist_mirror, tmp_path, split_seed=0, seed=1)
    other_split = loaded("fashion_mnist", fmnist_mirror, tmp_path, split_seed=1, seed=0)
    assert torch.equal(base.val_set.x, other_seed.val_set.x) and torch.equal(base.val_set.y, other_seed.val_set.y)
    assert torch.equal(base.train_set.x, other_seed.train_set.x)
    assert {key(x) for x in base.val_set.x} != {key(x) for x in other_split.val_set.x}


# ---- config errors -------------------------------------------------------------------------------------
ERRORS = {
    "val_size-equals-train": ("fashion_mnist", "mirror", {"val_size": N_TRAIN}, "data.val_size="),
    "val_size-equals-subset": ("fashion_mnist", "mirror", {"subset": 50, "val_size": 50}, "data.val_size="),
    "subset-above-train": ("fashion_mnist", "mirror", {"subset": N_TRAIN + 1}, "data.subset="),
    "missing-source": ("fashion_mnist", "missing", {}, "data.source="),
    "source-not-an-archive": ("cifar10", "plain-file", {}, "data.source="),
    "offline-empty-root": ("cifar10", None, {}, "data.download="),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_prepare_data_config_errors(case, fmnist_mirror, tmp_path):
    name, source, kw, prefix = ERRORS[case]
    plain_file = tmp_path / "cifar.zip"
    plain_file.write_bytes(b"not a tarball")
    source = {"mirror": fmnist_mirror, "missing": tmp_path / "no-such-mirror", "plain-file": plain_file, None: None}[
        source
    ]
    dm = make_dm(name, source, tmp_path / "data", **kw)
    with pytest.raises(ConfigError) as err:
        dm.prepare_data()
    assert str(err.value).startswith(prefix) and "\n" not in str(err.value)


# ---- normalization -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,mirror", [LAYOUTS[0], LAYOUTS[2]], ids=["fmnist", "cifar"])
def test_standardize_gives_zero_mean_unit_std_on_train_split(name, mirror, request, tmp_path):
    dm = loaded(name, request.getfixturevalue(mirror), tmp_path, normalize="standardize")
    out = dm.transform(dm.train_set.x, train=False).double()
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (out.std(dim=(0, 2, 3), correction=0) - 1).abs().max() < 1e-3


# ---- the batch hook ------------------------------------------------------------------------------------
def test_batch_hook_augments_only_while_training(cifar_folder, tmp_path):
    dm = loaded("cifar10", cifar_folder, tmp_path, augment=augment_cfg("full", p=1.0))
    x, y = next(iter(dm.train_dataloader()))
    assert dm.trainer is None
    out, out_y = dm.on_after_batch_transfer((x, y), 0)
    assert torch.equal(out, x.float() / 255) and torch.equal(out_y, y)

    # while training, augmentation draws from (seed, global_step): the same step replays the same batch
    def at_step(step):
        dm.trainer = SimpleNamespace(training=True, global_step=step, global_rank=0)
        return dm.on_after_batch_transfer((x, y), 0)[0]

    first, again, later = at_step(3), at_step(3), at_step(4)
    assert not torch.equal(first, x.float() / 255)
    assert torch.equal(first, again)
    assert not torch.equal(first, later)


# the mirrors: tests/data/test_sources.py; the cache: test_cache.py; BatchTransform: test_augment.py; the epoch order
# and the loader: tests/run/test_fast_path.py
