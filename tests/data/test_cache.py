"""The decoded-dataset cache (data/cache.py, keyed by data/store.py): a second load reads the same tensors from one
.pt file written atomically; the key is the source's content checksum (a folder and its tarball get separate files,
an edited mirror at the same path is decoded again); two processes building at once decode once; a file whose bytes
fail their CRC-32 is decoded again, or stops the run in one line when its source is gone."""

import errno
import hashlib
import multiprocessing as mp
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import LAYOUTS, N_TRAIN, compose_cfg, key, loaded, make_dm, tiny_run_overrides, write_idx_mirror

from trickbench.data.registry import DATASETS, OFFLINE_HINT
from trickbench.train import main_task


def cache_files(root: Path, pattern: str = "*.pt") -> list[Path]:
    return sorted((root / "cache").glob(pattern))


@pytest.mark.parametrize("name,mirror", [LAYOUTS[0], LAYOUTS[3]], ids=["fmnist-folder", "cifar-tarball"])
def test_second_load_hits_cache_with_identical_tensors(name, mirror, request, tmp_path):
    source = request.getfixturevalue(mirror)
    first, second = loaded(name, source, tmp_path), loaded(name, source, tmp_path)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    for a, b in (
        (first.train_set, second.train_set),
        (first.val_set, second.val_set),
        (first.test_set, second.test_set),
    ):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert first.info == second.info
    assert len(cache_files(tmp_path)) == 1
    # atomic write: the temp file was renamed into place, only the cache and its lock remain
    assert all(p.name.endswith((".pt", ".pt.lock")) for p in (tmp_path / "cache").iterdir())


def test_folder_and_tarball_get_separate_cache_files(cifar_folder, cifar_tarball, tmp_path):
    folder, tarball = loaded("cifar10", cifar_folder, tmp_path), loaded("cifar10", cifar_tarball, tmp_path)
    assert (folder.cache_hit, tarball.cache_hit) == (False, False)
    assert len(cache_files(tmp_path)) == 2
    assert folder.info["source_sha256"] != tarball.info["source_sha256"]


def test_changed_mirror_at_same_path_is_decoded_again(tmp_path):
    # the key is the content's checksum, not the path: an edited mirror must not be served from the old cache
    mirror = write_idx_mirror(tmp_path / "mirror", n_train=N_TRAIN)
    before = loaded("fashion_mnist", mirror, tmp_path / "data")
    write_idx_mirror(mirror, n_train=N_TRAIN + 1)
    after = loaded("fashion_mnist", mirror, tmp_path / "data")
    assert (before.cache_hit, after.cache_hit) == (False, False)
    assert len(after.train_set) + len(after.val_set) == N_TRAIN + 1
    assert len(cache_files(tmp_path / "data")) == 2


def _build_in_child(source: str, root: str, barrier, results) -> None:
    dm = make_dm("fashion_mnist", source, Path(root))
    barrier.wait()  # both processes reach the cache at the same time
    dm.prepare_data()
    dm.setup("fit")
    h = hashlib.sha256()
    for ds in (dm.train_set, dm.val_set, dm.test_set):
        h.update(key(ds.x))
        h.update(key(ds.y))
    results.put((dm.cache_hit, h.hexdigest()))


@pytest.mark.slow
def test_parallel_builds_decode_once(fmnist_mirror, tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_build_in_child, args=(str(fmnist_mirror), str(tmp_path), barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(hit for hit, _ in got) == [False, True]
    assert got[0][1] == got[1][1]
    assert len(cache_files(tmp_path)) == 1
    assert all(p.name.endswith((".pt", ".pt.lock")) for p in (tmp_path / "cache").iterdir())


def flip_bytes_of(cache_file: Path, tensor: torch.Tensor) -> None:
    """Inverts 64 bytes inside tensor's stored bytes, in place: the file keeps its size and stays a valid zip."""
    raw = bytearray(cache_file.read_bytes())
    start = raw.find(tensor.numpy().tobytes())
    assert start >= 0
    middle = start + tensor.nbytes // 2
    raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])
    size = cache_file.stat().st_size
    with open(cache_file, "r+b") as fh:  # overwritten where it lies, as a bad disk or copy would leave it
        fh.write(raw)
    assert cache_file.stat().st_size == size


@pytest.mark.parametrize("split", ["train_x", "test_x"])
def test_flipped_bytes_in_a_cached_split_are_decoded_again_or_stop_in_one_line(
    split, fmnist_mirror, tmp_path, monkeypatch, caplog, capsys
):
    # the official cache, decoded from a system copy: the one cache a run can reach once its source is gone (a
    # data.source cache is keyed by the source's checksum)
    system_copy = Path(shutil.copytree(fmnist_mirror, tmp_path / "system-copy"))
    monkeypatch.setitem(DATASETS, "fashion_mnist", replace(DATASETS["fashion_mnist"], system_dirs=(str(system_copy),)))
    source = DATASETS["fashion_mnist"].load_mirror(system_copy)
    root = tmp_path / "data"
    assert loaded("fashion_mnist", None, root).cache_hit is False
    (cache_file,) = cache_files(root)
    assert cache_file.name == "fashion_mnist-official.pt"

    flip_bytes_of(cache_file, getattr(source, split))
    served = torch.load(cache_file, weights_only=True)[split]  # what torch.load alone would hand on
    assert served.shape == getattr(source, split).shape and not torch.equal(served, getattr(source, split))
    caplog.clear()
    dm = make_dm("fashion_mnist", None, root)
    dm.prepare_data()
    assert dm.cache_hit is False
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and said[0].startswith(f"cache {cache_file} is damaged (CRC-32 mismatch in ")
    rebuilt = torch.load(cache_file, weights_only=True)
    for k in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(dm._data[k], getattr(source, k)) and torch.equal(rebuilt[k], getattr(source, k))
    assert loaded("fashion_mnist", None, root).cache_hit is True  # the rebuilt file passes its check

    flip_bytes_of(cache_file, getattr(source, split))
    shutil.rmtree(system_copy)
    overrides = [*tiny_run_overrides(fmnist_mirror, root=root), "data.source=null", "data.download=false"]
    with pytest.raises(SystemExit) as stopped:  # as train.py runs it
        main_task(compose_cfg(overrides, tmp_path / "run"))
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: data cache {cache_file} is damaged (CRC-32 mismatch in ")
    assert err[0].endswith(f"allow the download or set {OFFLINE_HINT['fashion_mnist']}")


# ---- OS errors on the data path: one line naming the path and the cause, nothing partial left ----------------------
class FailingFile:
    """A file whose writes fail with `code` once some bytes are in (a disk that fills mid-write)."""

    def __init__(self, path, code: int):
        self.fh, self.code, self.written = open(path, "wb"), code, 0  # noqa: SIM115

    def write(self, b) -> int:
        if self.written > 100:
            raise OSError(self.code, os.strerror(self.code))
        self.written += len(b)
        return self.fh.write(b)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def inject(monkeypatch, where: str, code: int) -> None:
    from trickbench.data import cache

    error = OSError(code, os.strerror(code))
    if where == "lock":
        monkeypatch.setattr(cache.FileLock, "acquire", lambda self, *a, **k: (_ for _ in ()).throw(error))
    elif where == "write":
        monkeypatch.setattr(cache, "open", lambda path, mode: FailingFile(path, code), raising=False)
    else:  # the rename of the whole temporary file into place
        real = os.replace

        def replace(src, dst):
            if ".tmp" in Path(src).name and Path(dst).suffix == ".pt":
                raise OSError(code, os.strerror(code), str(src))
            return real(src, dst)

        monkeypatch.setattr(cache.os, "replace", replace)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS], ids=errno.errorcode.get)
@pytest.mark.parametrize("where", ["lock", "write", "rename"])
def test_an_os_error_at_each_write_of_the_cache_is_one_line_and_leaves_nothing(
    where, code, fmnist_mirror, tmp_path, monkeypatch, capsys
):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    inject(monkeypatch, where, code)
    with pytest.raises(SystemExit) as stopped:  # as train.py runs it
        main_task(compose_cfg(tiny_run_overrides(fmnist_mirror, root=root), run_dir))
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    named = f"{root / 'cache'}:" if where == "lock" else f"{root / 'cache'}/fashion_mnist-"  # the file, not its tmp
    assert len(err) == 1 and err[0].startswith(f"error: {named}") and os.strerror(code).lower() in err[0], err
    if code in (errno.ENOSPC, errno.EDQUOT) and where != "lock":
        assert re.search(r"\(this write needs [\d.]+ (bytes|KB|MB), ", err[0]), err[0]
        assert err[0].endswith(f"free some space, then resume={run_dir}")
    else:
        assert err[0].endswith(f"fix that, then resume={run_dir}") or "free some space" in err[0]
    assert [p.name for p in (root / "cache").iterdir()] == []  # no partial cache, no temporary file, no lock


def test_a_cache_folder_under_a_file_is_one_line(fmnist_mirror, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(SystemExit) as stopped:
        main_task(compose_cfg(tiny_run_overrides(fmnist_mirror, root=tmp_path / "a-file"), tmp_path / "run"))
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 'a-file'}") and "not a directory" in err[0]
