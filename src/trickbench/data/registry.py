"""The datasets trickbench knows: shape, torchvision class, offline mirror decoder and layout. Adding a dataset is
one DATASETS entry (and its OFFLINE_HINT)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torchvision import datasets as tvd

from trickbench.data.sources import Decoded, load_idx, load_imagefolder

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class DatasetSpec:
    shape: tuple[int, int, int]
    official: type
    load_mirror: Callable[[Path], Decoded]
    mirror_layout: str
    system_dirs: tuple[str, ...] = field(default=())
    num_classes: int = 10
    train_size: int = 50_000  # the official train set's images; a mirror may hold fewer, never more


DATASETS = {
    "fashion_mnist": DatasetSpec(
        (1, 28, 28),
        tvd.FashionMNIST,
        lambda p: load_idx(p, FASHION_CLASSES),
        "IDX .gz files",
        ("/usr/share/datasets/fashion-mnist",),
        train_size=60_000,
    ),
    "cifar10": DatasetSpec(
        (3, 32, 32),
        tvd.CIFAR10,
        lambda p: load_imagefolder(p, 3, CIFAR10_CLASSES),
        "ImageFolder train/<class>/*, test/<class>/*",
    ),
}

OFFLINE_HINT = {
    "fashion_mnist": "data.source=<a folder of the four IDX .gz files> (or apt-get install dataset-fashion-mnist)",
    "cifar10": "data.source=<a folder or .tar.gz with train/<class>/*, test/<class>/*>",
}


def dataset_label(name: str, lossy: bool) -> str:
    return f"{name} (JPEG q75 copy)" if lossy else name
