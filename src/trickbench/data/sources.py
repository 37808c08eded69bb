"""Decode a dataset source into uint8 tensors: torchvision's official download, an IDX mirror
(Fashion-MNIST) or an ImageFolder mirror (CIFAR-10), each a folder or a .tar.gz."""

import gzip
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from trickbench.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass
class Decoded:
    train_x: torch.Tensor  # uint8 N,C,H,W
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    lossy: bool = False  # decoded from JPEG files


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every file under a folder or inside a tarball, in sorted order."""
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            yield f.relative_to(path).as_posix(), f.read_bytes()
        return
    try:
        tar = tarfile.open(path)
    except tarfile.ReadError as e:
        raise ConfigError("data.source", str(path), "a folder or a .tar/.tar.gz archive") from e
    with tar:
        for m in sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name):
            yield m.name, tar.extractfile(m).read()


# IDX (LeCun's MNIST format), read from bytes: torchvision's reader wants a decompressed file on disk.
# Header: 2 zero bytes, type (0x08 = uint8), ndim, then ndim big-endian int32 sizes.
def _read_idx(raw: bytes) -> torch.Tensor:
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy())


IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def load_idx(path: Path, classes: list[str]) -> Decoded:
    found = {}
    for name, raw in _members(path):
        stem = Path(name).name.removesuffix(".gz")
        for key, idx_name in IDX_FILES.items():
            if stem == idx_name:
                found[key] = _read_idx(raw)
    missing = [IDX_FILES[k] + ".gz" for k in IDX_FILES if k not in found]
    if missing:
        raise ConfigError("data.source", str(path), f"an IDX mirror must hold {missing}")
    return Decoded(
        found["train_x"].unsqueeze(1),
        found["train_y"].long(),
        found["test_x"].unsqueeze(1),
        found["test_y"].long(),
        classes,
    )


def load_imagefolder(path: Path, channels: int) -> Decoded:
    """<path>/[top/]{train,test}/<class>/<image>; class index = sorted class-folder names."""
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    splits: dict[str, list[tuple[str, torch.Tensor]]] = {"train": [], "test": []}
    lossy = False
    for name, raw in _members(path):
        parts = Path(name).parts
        if len(parts) < 3 or parts[-3] not in splits or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        lossy |= Path(name).suffix.lower() in {".jpg", ".jpeg"}
        image = decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=mode)
        splits[parts[-3]].append((parts[-2], image))
    if not splits["train"] or not splits["test"]:
        raise ConfigError(
            "data.source", str(path), "an ImageFolder mirror must hold train/<class>/* and test/<class>/* images"
        )
    classes = sorted({c for c, _ in splits["train"]})
    index = {c: i for i, c in enumerate(classes)}
    tensors = []
    for split in ("train", "test"):
        shapes = {tuple(img.shape) for _, img in splits[split]}
        if len(shapes) != 1:
            raise ConfigError(
                "data.source", str(path), f"all {split} images must have one size; found {sorted(shapes)}"
            )
        tensors += [
            torch.stack([img for _, img in splits[split]]),
            torch.tensor([index[c] for c, _ in splits[split]], dtype=torch.long),
        ]
    return Decoded(*tensors, classes=classes, lossy=lossy)


def load_official(dataset_cls, root: Path) -> Decoded:
    """torchvision's download (md5-checked by torchvision) into root."""
    train, test = dataset_cls(root, train=True, download=True), dataset_cls(root, train=False, download=True)

    def as_nchw(data) -> torch.Tensor:
        data = torch.as_tensor(np.asarray(data))
        return data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2).contiguous()

    return Decoded(
        as_nchw(train.data),
        torch.as_tensor(train.targets).long(),
        as_nchw(test.data),
        torch.as_tensor(test.targets).long(),
        list(train.classes),
    )


def read_bytes_for_hash(path: Path) -> Iterator[bytes]:
    """What a source's checksum covers: the archive's bytes, or every file's relative path and bytes."""
    if path.is_dir():
        for name, raw in _members(path):
            yield name.encode()
            yield raw
    else:
        with open(path, "rb") as fh:
            yield from iter(lambda: fh.read(1 << 20), b"")
