"""The offline mirrors (data/sources.py): both layouts of each dataset (IDX .gz files as a folder and a .tar.gz;
ImageFolder as a folder and a .tar.gz) decode losslessly, each image with its label, in file order for the test split;
a JPEG copy of CIFAR-10 is labelled as one."""

from pathlib import Path

import pytest
import torch
from conftest import CIFAR_CLASSES, LAYOUTS, N_TEST, N_TRAIN, key, learnable_images, loaded
from torchvision.io import encode_jpeg

SHAPES = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def write_jpeg_mirror(folder: Path, n_train=20, n_test=10) -> Path:
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = learnable_images(n, (3, 32, 32), seed)
        for i in range(n):
            d = folder / "cifar10-jpeg" / split / CIFAR_CLASSES[int(y[i])]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:04d}.jpg").write_bytes(encode_jpeg(x[i], quality=75).numpy().tobytes())
    return folder


@pytest.mark.parametrize("name,mirror", LAYOUTS, ids=[m for _, m in LAYOUTS])
def test_mirror_decodes_losslessly(name, mirror, request, tmp_path):
    dm = loaded(name, request.getfixturevalue(mirror), tmp_path)
    shape = SHAPES[name]
    for ds in (dm.train_set, dm.val_set, dm.test_set):
        assert ds.x.dtype == torch.uint8 and ds.x.shape[1:] == shape
        assert ds.y.dtype == torch.int64 and 0 <= ds.y.min() and ds.y.max() < 10
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (N_TRAIN - 20, 20, N_TEST)
    assert dm.info["sizes"] == {"train": N_TRAIN - 20, "val": 20, "test": N_TEST}

    # train + val is a permutation of the mirror's train images, each with the label it was written under
    x, y = learnable_images(N_TRAIN, shape, 0)
    written = {key(img): int(label) for img, label in zip(x, y, strict=True)}
    assert len(written) == N_TRAIN  # every image unique, so bytes identify it
    got = torch.cat([dm.train_set.x, dm.val_set.x]), torch.cat([dm.train_set.y, dm.val_set.y])
    assert {key(img): int(label) for img, label in zip(*got, strict=True)} == written

    # the test set keeps file order: IDX order, or ImageFolder's sorted class folders then file names
    x, y = learnable_images(N_TEST, shape, 1)
    order = sorted(range(N_TEST), key=lambda i: (CIFAR_CLASSES[y[i]], i)) if name == "cifar10" else list(range(N_TEST))
    assert torch.equal(dm.test_set.x, x[order])
    assert torch.equal(dm.test_set.y, y[order])
    if name == "cifar10":
        assert dm.info["classes"] == sorted(CIFAR_CLASSES)


@pytest.mark.parametrize(
    "kind,expected",
    [("png-folder", "cifar10"), ("png-tarball", "cifar10"), ("jpeg-folder", "cifar10 (JPEG q75 copy)")],
    ids=["png-folder", "png-tarball", "jpeg"],
)
def test_dataset_label_marks_jpeg_copies(kind, expected, cifar_folder, cifar_tarball, tmp_path):
    source = {"png-folder": cifar_folder, "png-tarball": cifar_tarball}.get(kind) or write_jpeg_mirror(
        tmp_path / "jpeg"
    )
    dm = loaded("cifar10", source, tmp_path / "data", val_size=5)
    assert dm.info["dataset"] == expected
    assert dm.train_set.x.shape[1:] == (3, 32, 32)
