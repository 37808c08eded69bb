"""Decode a dataset source into uint8 tensors: torchvision's official download, an IDX mirror
(Fashion-MNIST) or an ImageFolder mirror (CIFAR-10), each a folder or a .tar.gz."""

import gzip
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from trickbench.errors import ConfigError, first_line

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass
class Decoded:
    train_x: torch.Tensor  # uint8 N,C,H,W
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    lossy: bool = False  # decoded from JPEG files


# What reading a truncated or corrupt archive or .gz raises (tarfile, gzip and zlib each have their own).
UNREADABLE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every file under a folder or inside a tarball, in sorted order."""
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            yield f.relative_to(path).as_posix(), f.read_bytes()
        return
    try:
        with tarfile.open(path) as tar:
            for m in sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name):
                yield m.name, tar.extractfile(m).read()
    except UNREADABLE as e:
        raise ConfigError(
            "data.source", str(path), f"a folder or a complete .tar/.tar.gz archive; reading it failed: {first_line(e)}"
        ) from e


# IDX (LeCun's MNIST format), read from bytes: torchvision's reader wants a decompressed file on disk.
# Header: 2 zero bytes, type (0x08 = uint8), ndim, then ndim big-endian int32 sizes.
def _read_idx(raw: bytes) -> torch.Tensor:
    """The uint8 array in an IDX file (gzipped or not); ValueError saying what is wrong with it."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except UNREADABLE as e:
            raise ValueError(f"truncated or corrupt gzip ({first_line(e)})") from e
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError("not a uint8 IDX file (its header does not start with 00 00 08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4) if len(raw) >= header else None
    if dims is None or len(raw) != header + int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"{len(raw)} bytes, but its header promises {header} + the product of {dims}: truncated")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy())


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
                try:
                    found[key] = _read_idx(raw)
                except ValueError as e:
                    raise ConfigError("data.source", str(path), f"readable IDX files; {name}: {e}") from e
    missing = [IDX_FILES[k] + ".gz" for k in IDX_FILES if k not in found]
    if missing:
        raise ConfigError("data.source", str(path), f"an IDX mirror must hold {missing}")
    for split, x, y in (("train", found["train_x"], found["train_y"]), ("t10k", found["test_x"], found["test_y"])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ConfigError(
                "data.source",
                str(path),
                f"{split} images as N x H x W and N labels; found {tuple(x.shape)} and {tuple(y.shape)}",
            )
        if len(y) and int(y.max()) >= len(classes):
            raise ConfigError(
                "data.source", str(path), f"{split} labels in [0, {len(classes) - 1}]; found {int(y.max())}"
            )
    return Decoded(
        found["train_x"].unsqueeze(1),
        found["train_y"].long(),
        found["test_x"].unsqueeze(1),
        found["test_y"].long(),
        classes,
    )


def load_imagefolder(path: Path, channels: int, classes: list[str]) -> Decoded:
    """<path>/[top/]{train,test}/<class>/<image>, exactly the given classes; class index = sorted names."""
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    splits: dict[str, list[tuple[str, torch.Tensor]]] = {"train": [], "test": []}
    lossy = False
    for name, raw in _members(path):
        parts = Path(name).parts
        if len(parts) < 3 or parts[-3] not in splits or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        lossy |= Path(name).suffix.lower() in {".jpg", ".jpeg"}
        try:
            image = decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=mode)
        except RuntimeError as e:
            raise ConfigError("data.source", str(path), f"decodable images; {name}: {first_line(e)}") from e
        splits[parts[-3]].append((parts[-2], image))
    if not splits["train"] or not splits["test"]:
        raise ConfigError(
            "data.source", str(path), "an ImageFolder mirror must hold train/<class>/* and test/<class>/* images"
        )
    classes = sorted(classes)
    for split, images in splits.items():
        found = {c for c, _ in images}
        if found != set(classes):
            missing, extra = sorted(set(classes) - found), sorted(found - set(classes))
            raise ConfigError(
                "data.source",
                str(path),
                f"one {split}/<class> folder per class of {classes}; missing {missing}, extra {extra}",
            )
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
