"""The decoded-dataset cache (data/cache.py, keyed by data/store.py): a second load reads the same tensors from one
.pt file written atomically; the key is the source's content checksum (a folder and its tarball get separate files,
an edited mirror at the same path is decoded again); two processes building at once decode once."""

import hashlib
import multiprocessing as mp
from pathlib import Path

import pytest
import torch
from conftest import LAYOUTS, N_TRAIN, key, loaded, make_dm, write_idx_mirror


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
