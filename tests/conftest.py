"""Shared fixtures: composed configs pointed at tmp dirs, tiny dataset mirrors built on the fly in both layouts of
../shared/datasets (IDX .gz; ImageFolder as folder and .tar.gz), and the helpers more than one test file uses."""

import functools
import gzip
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path
from types import UnionType
from typing import NotRequired, Union, get_args, get_origin, get_type_hints

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.io import encode_png

from trickbench import speed, train
from trickbench.config.validate import compose_run_config
from trickbench.data import ImageDataModule
from trickbench.models import build_model
from trickbench.results import Results
from trickbench.tricks import distill

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


def compose_cfg(overrides: list[str], out_dir: Path | None = None) -> DictConfig:
    """conf/train.yaml with overrides, as train.py would see it; paths under out_dir when given."""
    return compose_run_config(overrides, out_dir)


def train_cli(*args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    """`python train.py ARGS` as a user runs it, from the repo root; tests/ on PYTHONPATH for hooks.<Class>."""
    # this checkout's src/ first: the venv's editable install may point at another checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")])}
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, **kw
    )


def last_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def same_weights(a: Path, b: Path) -> bool:
    """Whether two runs' last.ckpt hold the same tensors, bit for bit."""
    wa, wb = last_weights(a), last_weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ---- tiny mirrors -------------------------------------------------------------------------------------
def _idx_bytes(t: torch.Tensor) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, t.ndim) + struct.pack(f">{t.ndim}i", *t.shape)
    return header + t.to(torch.uint8).numpy().tobytes()


def learnable_images(n: int, shape: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images whose class sets the brightness of a band of rows (so a tiny net can learn them)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randint(0, 60, (n, *shape), generator=g, dtype=torch.uint8)
    for c in range(10):
        rows = slice(c * shape[1] // 10, (c + 1) * shape[1] // 10)
        x[y == c, :, rows, :] += 180
    return x, y


def write_idx_mirror(folder: Path, n_train=200, n_test=60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = learnable_images(n, (1, 28, 28), seed)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(x[:, 0])))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(y)))
    return folder


def write_imagefolder_mirror(folder: Path, n_train=200, n_test=60, top="cifar10-tiny") -> Path:
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = learnable_images(n, (3, 32, 32), seed)
        for i in range(n):
            d = folder / top / split / CIFAR_CLASSES[int(y[i])]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:04d}.png").write_bytes(encode_png(x[i]).numpy().tobytes())
    return folder


def tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name)
    return archive


@pytest.fixture(autouse=True)
def cpu_without_native_bf16(monkeypatch):
    """In-process runs take trainer.precision=null as 32-true whatever CPU runs the suite (Intel, AMD, with or
    without AVX512_BF16), so their numbers do not depend on it; tests of the auto choice patch the probe themselves.
    Runs in subprocesses (train_cli) ask the real probe: the default as a user gets it."""
    monkeypatch.setattr(speed, "cpu_native_bf16", lambda: False)


@pytest.fixture(scope="session")
def fmnist_mirror(tmp_path_factory) -> Path:
    return write_idx_mirror(tmp_path_factory.mktemp("fmnist_mirror"))


@pytest.fixture(scope="session")
def fmnist_tarball(fmnist_mirror, tmp_path_factory) -> Path:
    return tar_gz(fmnist_mirror, tmp_path_factory.mktemp("fmnist_tar") / "fashion-mnist.tar.gz")


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory) -> Path:
    return write_imagefolder_mirror(tmp_path_factory.mktemp("cifar_folder"))


@pytest.fixture(scope="session")
def cifar_tarball(cifar_folder, tmp_path_factory) -> Path:
    return tar_gz(cifar_folder, tmp_path_factory.mktemp("cifar_tar") / "cifar10-tiny.tar.gz")


# one epoch of one batch per stage, on the CPU, quietly: a run that only has to start, step and finish
ONE_BATCH = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
]


def tiny_run_overrides(source: Path, data: str = "fashion_mnist", root: Path | None = None) -> list[str]:
    """A 1-epoch run on a tiny mirror: small subset, few batches, no progress bar."""
    return [
        f"data={data}",
        f"data.source={source}",
        "data.subset=160",
        "data.val_size=40",
        "data.batch_size=32",
        "data.eval_batch_size=64",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
        "model.channels=[4,8]",
        "model.head=[16]",
        *([f"data.root={root}"] if root else []),
    ]


# ---- helpers more than one test file uses ------------------------------------------------------------
# a run's results.json against its contract (tests/run/test_train.py, test_train_clean.py)
def check_contract(results: dict) -> None:
    """results.json against results.Results: every required key, no key it does not name, each of its type."""
    hints = get_type_hints(Results)
    assert Results.__required_keys__ <= results.keys() <= Results.__required_keys__ | Results.__optional_keys__
    for key, value in results.items():
        kind = hints[key]
        kind = get_args(kind)[0] if get_origin(kind) is NotRequired else kind
        union = get_origin(kind) in (Union, UnionType)
        allowed = tuple(get_origin(a) or a for a in (get_args(kind) if union else (kind,)) if a is not type(None))
        assert (value is None and union and type(None) in get_args(kind)) or isinstance(value, allowed), (key, kind)
        if float in allowed:
            assert not isinstance(value, bool)


# composed augment nodes and a datamodule set up for fit (tests/tricks/test_mixing.py, tests/data/test_augment.py)
def augment(*overrides: str):
    return compose_cfg(list(overrides)).augment


def datamodule(name, source, root, **kw) -> ImageDataModule:
    return _set_up(ImageDataModule(name, source=str(source), root=str(root), download=False, val_size=20, **kw))


def _set_up(dm: ImageDataModule) -> ImageDataModule:
    dm.prepare_data()
    dm.setup("fit")
    return dm


# the data pipeline's tests (tests/data/test_sources.py, test_cache.py, test_datamodule.py, test_augment.py): the
# conftest mirrors in both layouts, a datamodule on them with small batches, an image's bytes as a dict key
N_TRAIN, N_TEST = 200, 60  # what the conftest mirrors hold
LAYOUTS = [
    ("fashion_mnist", "fmnist_mirror"),
    ("fashion_mnist", "fmnist_tarball"),
    ("cifar10", "cifar_folder"),
    ("cifar10", "cifar_tarball"),
]


def make_dm(name: str, source, root: Path, **kw) -> ImageDataModule:
    kw = {"val_size": 20, "batch_size": 32, "eval_batch_size": 64, **kw}
    return ImageDataModule(name, source=str(source) if source else None, root=str(root), download=False, **kw)


def loaded(name: str, source, root: Path, **kw) -> ImageDataModule:
    return _set_up(make_dm(name, source, root, **kw))


def key(img: torch.Tensor) -> bytes:
    return img.numpy().tobytes()


def augment_cfg(name: str, **erasing):
    cfg = augment(f"augment={name}")
    return OmegaConf.merge(cfg, {"erasing": erasing}) if erasing else cfg


# composed configs, read-only and cached, and model=speednet built from them (tests/models/test_speednet.py,
# tests/nn/test_norm.py, tests/test_optim.py, tests/callbacks/test_whitening.py, tests/experiments/test_speedrun.py)
@functools.lru_cache(maxsize=None)
def composed(*overrides: str):
    cfg = compose_cfg(list(overrides))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def build_speednet(*overrides: str, shape=(3, 32, 32)) -> nn.Module:
    cfg = composed("model=speednet", *overrides)
    return build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, shape, 10)


# in-process runs with extra callbacks (tests/callbacks/test_ema.py, test_swa.py, tests/tricks/test_distill.py, ...)
def run_with(overrides: list[str], out, *callbacks: L.Callback) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        defaults = train._callbacks
        mp.setattr(train, "_callbacks", lambda c: [*defaults(c), *callbacks])
        return train.run(compose_cfg(overrides, out))


class Probe(L.Callback):
    """Records what the module holds during fit and test."""

    def __init__(self):
        self.teacher_modes, self.steps, self.validated, self.tested = [], [], [], None

    def on_train_start(self, trainer, module):
        self.module_params = sum(p.numel() for p in module.parameters())
        teacher = next((t.teacher for t in module.step_tricks if isinstance(t, distill.Distill)), None)
        if teacher is not None:
            teacher.register_forward_pre_hook(lambda m, args: self.teacher_modes.append(m.training))
            self.teacher_at_start = {k: v.clone() for k, v in teacher.state_dict().items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and not trainer.sanity_checking:
            self.validated.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    def on_test_start(self, trainer, module):
        self.tested = {k: v.detach().clone() for k, v in module.state_dict().items()}


def run_with_probe(cfg, monkeypatch) -> tuple[dict, Probe]:
    probe, callbacks = Probe(), train._callbacks
    monkeypatch.setattr(train, "_callbacks", lambda c: [*callbacks(c), probe])
    return train.run(cfg), probe
