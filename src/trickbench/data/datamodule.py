"""One LightningDataModule for every dataset (data/registry.py), loaded through the cache (data/store.py): a seeded
train/val split kept on the accelerator (data.on_device), and the batch pipeline (augment + normalize) run on the
batch's device."""

import logging
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from hydra.utils import to_absolute_path

from trickbench.data.augment import BatchTransform, channel_eigen, channel_stats, check_augment
from trickbench.data.loader import EpochOrder, Split, TensorLoader, mixed_seed, resident_device, seed_step
from trickbench.data.registry import DATASETS
from trickbench.data.sources import load_official
from trickbench.data.store import DatasetStore
from trickbench.errors import ConfigError
from trickbench.rules import Relation, Rule, boolean, check, integer, one_of, optional, text


def _exists(v) -> bool:
    return text(v) and Path(to_absolute_path(str(Path(v).expanduser()))).exists()


def _within_train_set(subset, cfg) -> bool:
    return cfg.data.get("name") not in DATASETS or subset <= DATASETS[cfg.data.name].train_size


RULES = [
    Rule("data.name", one_of(DATASETS), f"one of {sorted(DATASETS)}"),
    Rule("data.split_seed", integer(), "an integer"),
    Rule("data.batch_size", integer(1), "an integer >= 1"),
    Rule("data.eval_batch_size", integer(1), "an integer >= 1"),
    Rule("data.val_size", integer(1), "an integer >= 1, below the train set size"),
    Rule("data.subset", optional(integer(2)), "null or an integer >= 2"),
    Rule("data.on_device", lambda v: v == "auto" or isinstance(v, bool), "auto, true or false"),
    Rule("data.source", optional(_exists), "null or an existing folder or .tar/.tar.gz archive"),
    Rule("data.root", text, "a folder (the cache goes to <root>/cache)"),
    Rule("data.download", boolean, "true or false"),
    Relation(
        "data.subset",
        _within_train_set,
        lambda cfg: f"at most {DATASETS[cfg.data.name].train_size}, the {cfg.data.name} train set's size",
    ),
    Relation(
        "data.val_size",
        lambda v, cfg: cfg.data.get("subset") is None or v < cfg.data.subset,
        lambda cfg: f"less than data.subset={cfg.data.subset} (the subset is split into train and val)",
    ),
]

log = logging.getLogger(__name__)


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
        check({"data": {"name": name}}, RULES)  # before the registry lookup; the rest in prepare_data
        self.name, self.spec = name, DATASETS[name]
        # against the directory the command started from, even if Hydra changes into the run dir
        self.source = Path(to_absolute_path(str(Path(source).expanduser()))) if source else None
        self.root = Path(to_absolute_path(str(Path(root).expanduser())))
        self.download, self.batch_size, self.eval_batch_size = download, batch_size, eval_batch_size
        self.val_size, self.split_seed, self.subset = val_size, split_seed, subset
        self.normalize, self.augment_cfg, self.seed = normalize, augment or {}, seed
        self.on_device = on_device
        self._resident: dict[str, Split] = {}  # the splits on the device they are served from
        self._test_split = "test"  # the split test passes read (testing_on)
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

    # ---- Lightning hooks
    def prepare_data(self) -> None:
        """Decode and cache once; check the split sizes before any training starts."""
        if self.transform is not None:  # Lightning calls this again before test; the splits are made
            return
        # here, not in __init__: Hydra's instantiate would wrap the ConfigError
        check_augment(self.augment_cfg)
        own = ("split_seed", "batch_size", "eval_batch_size", "val_size", "subset", "on_device")
        check({"data": {key: getattr(self, key) for key in own}}, RULES)
        if self._data is None:
            store = DatasetStore(self.name, self.spec, self.root, self.download, load_official)
            self._data, self.cache_hit = store.load(self.source)
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

    @contextmanager
    def testing_on(self, split: str):
        """Test passes read another split: "train" for train_clean (train.py), each training image once across the
        ranks, normalized only (on_after_batch_transfer: a test pass is not training)."""
        self._test_split = split
        try:
            yield
        finally:
            self._test_split = "test"

    def test_dataloader(self):
        return self._eval_loader(self._served(self._test_split))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # the module's example input (model summary): images as served
            return self.transform(batch, train=False)
        x, y = batch
        training = self.trainer is not None and self.trainer.training
        if training:  # augmentation and dropout draw from (seed, step): a resumed run replays them
            seed_step(mixed_seed(self.seed, self.trainer.global_step, self.trainer.global_rank), x.device)
        return self.transform(x, train=training), y
