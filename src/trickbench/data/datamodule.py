"""One LightningDataModule for every dataset: uint8 tensors decoded once and cached, a seeded train/val split
kept on the accelerator (data.on_device), and the batch pipeline (augment + normalize) run on the batch's device."""

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from hydra.utils import to_absolute_path
from torchvision import datasets as tvd

from trickbench.data.augment import BatchTransform, channel_eigen, channel_stats, check_augment
from trickbench.data.cache import load_or_build, sha256_of
from trickbench.data.loader import EpochOrder, Split, TensorLoader, mixed_seed, resident_device, seed_step
from trickbench.data.sources import Decoded, load_idx, load_imagefolder, load_official
from trickbench.errors import ConfigError, TrickbenchError, first_line

log = logging.getLogger(__name__)

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


DATASETS = {
    "fashion_mnist": DatasetSpec(
        (1, 28, 28),
        tvd.FashionMNIST,
        lambda p: load_idx(p, FASHION_CLASSES),
        "IDX .gz files",
        ("/usr/share/datasets/fashion-mnist",),
    ),
    "cifar10": DatasetSpec(
        (3, 32, 32),
        tvd.CIFAR10,
        lambda p: load_imagefolder(p, 3, CIFAR10_CLASSES),
        "ImageFolder train/<class>/*, test/<class>/*",
    ),
}

OFFLINE_HINT = {
    "fashion_mnist": "data.source=../shared/datasets/fashion-mnist (or apt-get install dataset-fashion-mnist)",
    "cifar10": "data.source=../shared/datasets/cifar10-jpeg.tar.gz",
}


def dataset_label(name: str, lossy: bool) -> str:
    return f"{name} (JPEG q75 copy)" if lossy else name


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        name: str,
        source: str | None = None,
        root: str = "data",
        download: bool = True,
        batch_size: int = 128,
        eval_batch_size: int = 1024,
        val_size: int = 5000,
        split_seed: int = 0,
        subset: int | None = None,
        normalize: str = "none",
        augment=None,
        seed: int = 0,
        on_device="auto",
    ):
        super().__init__()
        if name not in DATASETS:
            raise ConfigError("data.name", name, f"one of {sorted(DATASETS)}")
        self.name, self.spec = name, DATASETS[name]
        # against the directory the command started from, even if Hydra changes into the run dir
        self.source = Path(to_absolute_path(str(Path(source).expanduser()))) if source else None
        self.root = Path(to_absolute_path(str(Path(root).expanduser())))
        self.download, self.batch_size, self.eval_batch_size = download, batch_size, eval_batch_size
        self.val_size, self.split_seed, self.subset = val_size, split_seed, subset
        self.normalize, self.augment_cfg, self.seed = normalize, augment or {}, seed
        self.on_device = on_device
        self._resident: dict[str, Split] = {}  # the splits on the device they are served from
        self.info: dict = {}
        self.transform: BatchTransform | None = None
        self.cache_hit: bool | None = None
        self._data: dict | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.spec.shape

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    # ---- source resolution: explicit data.source, the cache, the system copy, torchvision's download
    @cached_property
    def _cache_file_and_builder(self) -> tuple[Path, Callable[[], dict]]:
        """The cache file for this source, and what builds it when absent (load_or_build looks first)."""
        cache_dir = self.root / "cache"
        if self.source is None:
            return cache_dir / f"{self.name}-official.pt", self._build_official
        if not self.source.exists():
            raise ConfigError(
                "data.source",
                str(self.source),
                f"no such file or folder; expected a folder or .tar.gz with {self.spec.mirror_layout}",
            )
        digest = sha256_of(self.source)
        return cache_dir / f"{self.name}-{digest[:16]}.pt", lambda: self._decode(self.source, digest)

    def _build_official(self) -> dict:
        for system_copy in map(Path, self.spec.system_dirs):
            if system_copy.is_dir():
                return self._decode(system_copy, sha256_of(system_copy))
        if not self.download:
            raise ConfigError(
                "data.download",
                False,
                f"no cached {self.name} under {self.root / 'cache'}; "
                f"allow the download or set {OFFLINE_HINT[self.name]}",
            )
        return self._download()

    def _decode(self, path: Path, digest: str) -> dict:
        log.info("decoding %s from %s (once; cached under %s)", self.name, path, self.root / "cache")
        d = self.spec.load_mirror(path)
        self._check_shape(d, path)
        return {**d.__dict__, "source": str(path), "source_sha256": digest, "label": dataset_label(self.name, d.lossy)}

    def _download(self) -> dict:
        raw = self.root / "downloads"
        try:
            d = load_official(self.spec.official, raw)
        except Exception as e:  # noqa: BLE001  (any network failure: say how to work offline)
            raise TrickbenchError(
                f"could not download {self.name} ({type(e).__name__}: {first_line(e)}); "
                f"point at an offline copy: {OFFLINE_HINT[self.name]}"
            ) from e
        self._check_shape(d, raw)
        return {**d.__dict__, "source": "torchvision", "source_sha256": sha256_of(raw), "label": self.name}

    def _check_shape(self, d: Decoded, path: Path) -> None:
        for split, x in (("train", d.train_x), ("test", d.test_x)):
            if tuple(x.shape[1:]) != self.shape:
                raise ConfigError(
                    "data.source", str(path), f"{self.name} needs {self.shape} images; {split} has {tuple(x.shape[1:])}"
                )

    # ---- Lightning hooks
    def prepare_data(self) -> None:
        """Decode and cache once; check the split sizes before any training starts."""
        if self.transform is not None:  # Lightning calls this again before test; the splits are made
            return
        check_augment(self.augment_cfg)  # here, not in __init__: Hydra's instantiate would wrap the ConfigError
        if not (self.on_device == "auto" or isinstance(self.on_device, bool)):
            raise ConfigError("data.on_device", self.on_device, "auto, true or false")
        if self._data is None:
            cache_file, build = self._cache_file_and_builder
            self._data, self.cache_hit = load_or_build(cache_file, build)
        n_train = len(self._data["train_y"])
        if self.subset is not None and not 2 <= self.subset <= n_train:
            raise ConfigError("data.subset", self.subset, f"must be in [2, {n_train}] (the train set size) or null")
        pool = self.subset or n_train
        if not 0 < self.val_size < pool:
            raise ConfigError(
                "data.val_size", self.val_size, f"must be in [1, {pool - 1}]: less than the train set size {pool}"
            )

    def check_ranks(self, world_size: int) -> None:
        """Under DDP every rank evaluates a share of val and test: each split needs an image per rank."""
        n_test = min(self.subset or len(self._data["test_y"]), len(self._data["test_y"]))
        for key, n in (("data.val_size", self.val_size), ("data.subset", n_test)):
            if n < world_size:
                raise ConfigError(key, n, f"at least one val and test image per DDP rank ({world_size} ranks)")

    def setup(self, stage: str | None = None) -> None:
        if self.transform is not None:  # Lightning calls setup for fit and again for test
            return
        if self._data is None:  # other DDP ranks: the cache exists now
            self.prepare_data()
        d = self._data
        g = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(len(d["train_y"]), generator=g)[: self.subset or None]
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        # mirrors store images sorted by class: a subset of the test set must be drawn, not the first N
        test_idx = torch.randperm(len(d["test_y"]), generator=g)[: self.subset or None].sort().values
        self.train_set = Split(d["train_x"][train_idx], d["train_y"][train_idx])
        self.val_set = Split(d["train_x"][val_idx], d["train_y"][val_idx])
        self.test_set = Split(d["test_x"][test_idx], d["test_y"][test_idx])
        mean = std = None
        if self.normalize == "standardize":
            mean, std = channel_stats(self.train_set.x)
            log.info(
                "standardize: train-split mean %s, std %s", [round(m, 4) for m in mean], [round(s, 4) for s in std]
            )
        lighting = self._lighting_stats()
        self.info = {
            "dataset": d["label"],
            "source": d["source"],
            "source_sha256": d["source_sha256"],
            "classes": d["classes"],
            "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
            "normalization": {"mode": self.normalize, "mean": mean, "std": std},
            "pca_lighting": lighting,
        }
        self.transform = BatchTransform(
            self.normalize,
            self.augment_cfg,
            self.shape[1:],
            mean,
            std,
            channels=self.shape[0],
            num_classes=self.num_classes,
            lighting=(lighting["eigval"], lighting["eigvec"]) if lighting else None,
        )
        self._data = None  # the splits hold their own copies

    def _lighting_stats(self) -> dict | None:
        """PCA lighting's eigenvalues and eigenvectors (columns), from the train split only."""
        if not self.augment_cfg.get("pca_lighting"):
            return None
        eigval, eigvec = channel_eigen(self.train_set.x)
        log.info("pca_lighting: train-split eigenvalues %s", [round(v, 6) for v in eigval.tolist()])
        return {"eigval": eigval.tolist(), "eigvec": eigvec.tolist()}

    def _served(self, split: str) -> Split:
        """The split on the device batches are served from: moved there once, on first use."""
        if split not in self._resident:
            target = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            splits = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
            nbytes = sum(s.x.nbytes + s.y.nbytes for s in splits.values())
            device = resident_device(self.on_device, target, nbytes)
            self._resident = {name: s.to(device) for name, s in splits.items()}
            self.info["data_device"] = str(device)
        return self._resident[split]

    def _rank(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def train_dataloader(self):
        split = self._served("train")
        return TensorLoader(split.x, split.y, self.batch_size, EpochOrder(len(split), self.seed, *self._rank()))

    def _eval_loader(self, split: Split) -> TensorLoader:
        """Under DDP each rank evaluates its own contiguous share, sizes differing by at most one image; the metric
        objects sum the counts over ranks, so every image counts once (DistributedSampler would pad with repeats)."""
        rank, world = self._rank()
        start, stop = rank * len(split) // world, (rank + 1) * len(split) // world
        return TensorLoader(split.x[start:stop], split.y[start:stop], self.eval_batch_size)

    def val_dataloader(self):
        return self._eval_loader(self._served("val"))

    def test_dataloader(self):
        return self._eval_loader(self._served("test"))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # the module's example input (model summary): images as served
            return self.transform(batch, train=False)
        x, y = batch
        training = self.trainer is not None and self.trainer.training
        if training:  # augmentation and dropout draw from (seed, step): a resumed run replays them
            seed_step(mixed_seed(self.seed, self.trainer.global_step, self.trainer.global_rank), x.device)
        x = self.transform(x, train=training)
        if training and self.transform.mix is not None:  # y stays: train accuracy counts the original labels
            x, soft_targets = self.transform.mix(x, y)
            return x, y, soft_targets
        return x, y
