"""Decoded datasets cached as one .pt file each: written atomically under a file lock, so parallel
sweep jobs on a fresh clone decode once and never read a half-written file."""

import contextlib
import hashlib
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock

from trickbench.data.sources import read_bytes_for_hash
from trickbench.errors import first_line

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    for chunk in read_bytes_for_hash(path):
        h.update(chunk)
    return h.hexdigest()


def load_or_build(cache_file: Path, build: Callable[[], dict]) -> tuple[dict, bool]:
    """(cached dict, True) if cache_file exists, else (build(), False) after saving it there."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(str(cache_file) + ".lock")
    with FileLock(lock):
        try:
            return _load_or_build(cache_file, build)
        finally:
            # removed while held: a job still waiting on it (or on a new one) finds the cache file written, and a
            # second decode after a failed one is harmless (writes are atomic); Windows keeps an open file
            with contextlib.suppress(OSError):
                lock.unlink(missing_ok=True)


def _load_or_build(cache_file: Path, build: Callable[[], dict]) -> tuple[dict, bool]:
    if cache_file.exists():
        try:
            return torch.load(cache_file, weights_only=True), True
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            # damaged outside our atomic writes (a partial copy, a full disk): the source can rebuild it
            log.warning("cache %s is unreadable (%s); decoding again", cache_file, first_line(e))
    data = build()
    tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
    try:
        torch.save(data, tmp)
        os.replace(tmp, cache_file)
    finally:
        tmp.unlink(missing_ok=True)
    return data, False
