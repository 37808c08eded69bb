"""Decoded datasets cached as one .pt file each: written atomically under a file lock, so parallel
sweep jobs on a fresh clone decode once and never read a half-written file. Each load checks the CRC-32 of every
member that torch.save's zip format writes (torch.load does not): a damaged file is decoded again from its source."""

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
from trickbench.errors import TrickbenchError, first_line

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    for chunk in read_bytes_for_hash(path):
        h.update(chunk)
    return h.hexdigest()


def load_or_build(cache_file: Path, build: Callable[[], dict]) -> tuple[dict, bool]:
    """(cached dict, True) if cache_file exists, else (build(), False) after saving it there. An OSError (a full disk,
    a quota, a permission, the cache folder under a file) keeps its errno and names the cache's path: train.py says
    it in one line (errors.FileFault)."""
    lock = FileLock(Path(str(cache_file) + ".lock"))
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as e:
        e.filename = e.filename or str(cache_file.parent)
        raise
    try:
        return _load_or_build(cache_file, build)
    finally:
        # removed while held: a job still waiting on it (or on a new one) finds the cache file written, and a
        # second decode after a failed one is harmless (writes are atomic); Windows keeps an open file
        with contextlib.suppress(OSError):
            Path(lock.lock_file).unlink(missing_ok=True)
        lock.release()


def damage(cache_file: Path) -> str | None:
    """Why a cache file cannot be trusted (a member whose bytes fail their CRC-32, a truncated zip), None if whole."""
    # cost: 0.095 s for a 154 MB cache (50000x3x32x32 uint8; torch.load 0.18 s), 2-core AMD EPYC VM, page cache warm
    try:
        with zipfile.ZipFile(cache_file) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError) as e:
        return f"unreadable ({first_line(e)})"
    return None if bad is None else f"damaged (CRC-32 mismatch in {bad})"


def _load_or_build(cache_file: Path, build: Callable[[], dict]) -> tuple[dict, bool]:
    why = damage(cache_file) if cache_file.exists() else None
    if cache_file.exists() and why is None:
        try:
            return torch.load(cache_file, weights_only=True), True
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            why = f"unreadable ({first_line(e)})"
    if why is not None:
        # damaged outside our atomic writes (a partial copy, a full disk, a bad disk): the source can rebuild it
        log.warning("cache %s is %s; decoding again", cache_file, why)
    try:
        data = build()
    except TrickbenchError as e:
        if why is None:
            raise
        raise TrickbenchError(f"data cache {cache_file} is {why}, and decoding it again failed: {first_line(e)}") from e
    _save(data, cache_file)
    return data, False


def _save(data: dict, cache_file: Path) -> None:
    """Whole or not at all: a temporary file beside it, renamed. torch.save into an open file, not a path: there a
    full disk raises the OSError with its errno (to a path, torch's writer says RuntimeError with none), and no
    second copy of the data is made in memory."""
    tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(data, fh)
        os.replace(tmp, cache_file)
    except (OSError, RuntimeError) as e:
        # a failed write inside torch.save surfaces as the zip writer's RuntimeError on closing, the OSError before it
        error = e if isinstance(e, OSError) else e.__context__
        if not isinstance(error, OSError):
            raise
        error.needed_bytes = sum(t.nbytes for t in data.values() if isinstance(t, torch.Tensor))
        if error.filename is None or str(error.filename) == str(tmp):
            error.filename = str(cache_file)  # the user's file, not our temporary name (a failed write names none)
        raise error from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
