"""Data pipeline: both mirror layouts decode losslessly, the checksum-keyed cache (atomic, parallel-safe),
the seeded split, config errors, normalization and per-sample augmentation."""

import hashlib
import multiprocessing as mp
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CIFAR_CLASSES, compose_cfg, learnable_images, tar_gz, write_idx_mirror
from omegaconf import OmegaConf
from torchvision.io import encode_jpeg

from trickbench.data import BatchTransform, ImageDataModule
from trickbench.errors import ConfigError

SHAPES = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
N_TRAIN, N_TEST = 200, 60  # what the conftest mirrors hold


@pytest.fixture(scope="session")
def fmnist_tarball(fmnist_mirror, tmp_path_factory) -> Path:
    return tar_gz(fmnist_mirror, tmp_path_factory.mktemp("fmnist_tar") / "fashion-mnist.tar.gz")


def make_dm(name: str, source, root: Path, **kw) -> ImageDataModule:
    kw = {"val_size": 20, "batch_size": 32, "eval_batch_size": 64, **kw}
    return ImageDataModule(name, source=str(source) if source else None, root=str(root), download=False, **kw)


def loaded(name: str, source, root: Path, **kw) -> ImageDataModule:
    dm = make_dm(name, source, root, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def key(img: torch.Tensor) -> bytes:
    return img.numpy().tobytes()


def cache_files(root: Path, pattern: str = "*.pt") -> list[Path]:
    return sorted((root / "cache").glob(pattern))


def augment_cfg(name: str, **erasing):
    cfg = compose_cfg([f"augment={name}"]).augment
    return OmegaConf.merge(cfg, {"erasing": erasing}) if erasing else cfg


def write_jpeg_mirror(folder: Path, n_train=20, n_test=10) -> Path:
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = learnable_images(n, (3, 32, 32), seed)
        for i in range(n):
            d = folder / "cifar10-jpeg" / split / CIFAR_CLASSES[int(y[i])]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:04d}.jpg").write_bytes(encode_jpeg(x[i], quality=75).numpy().tobytes())
    return folder


# ---- both mirror layouts -------------------------------------------------------------------------------
LAYOUTS = [
    ("fashion_mnist", "fmnist_mirror"),
    ("fashion_mnist", "fmnist_tarball"),
    ("cifar10", "cifar_folder"),
    ("cifar10", "cifar_tarball"),
]


@pytest.mark.parametrize("name,mirror", LAYOUTS, ids=[m for _, m in LAYOUTS])
def test_mirror_decodes_losslessly(name, mirror, request, tmp_path):
    dm = loaded(name, request.getfixturevalue(mirror), tmp_path)
    shape = SHAPES[name]
    for ds in (dm.train_set, dm.val_set, dm.test_set):
        assert ds.x.dtype == torch.uint8 and ds.x.shape[1:] == shape
        assert ds.y.dtype == torch.int64 and 0 <= ds.y.min() and ds.y.max() < 10
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (N_TRAIN - 20, 20, N_TEST)
    assert dm.info["sizes"] == {"train": N_TRAIN - 20, "val": 20, "test": N_TEST}

    # train + val is a permutation of the mirror's train images, each with the label it was written under
    x, y = learnable_images(N_TRAIN, shape, 0)
    written = {key(img): int(label) for img, label in zip(x, y, strict=True)}
    assert len(written) == N_TRAIN  # every image unique, so bytes identify it
    got = torch.cat([dm.train_set.x, dm.val_set.x]), torch.cat([dm.train_set.y, dm.val_set.y])
    assert {key(img): int(label) for img, label in zip(*got, strict=True)} == written

    # the test set keeps file order: IDX order, or ImageFolder's sorted class folders then file names
    x, y = learnable_images(N_TEST, shape, 1)
    order = sorted(range(N_TEST), key=lambda i: (CIFAR_CLASSES[y[i]], i)) if name == "cifar10" else list(range(N_TEST))
    assert torch.equal(dm.test_set.x, x[order])
    assert torch.equal(dm.test_set.y, y[order])
    if name == "cifar10":
        assert dm.info["classes"] == sorted(CIFAR_CLASSES)


@pytest.mark.parametrize(
    "kind,expected",
    [("png-folder", "cifar10"), ("png-tarball", "cifar10"), ("jpeg-folder", "cifar10 (JPEG q75 copy)")],
    ids=["png-folder", "png-tarball", "jpeg"],
)
def test_dataset_label_marks_jpeg_copies(kind, expected, cifar_folder, cifar_tarball, tmp_path):
    source = {"png-folder": cifar_folder, "png-tarball": cifar_tarball}.get(kind) or write_jpeg_mirror(
        tmp_path / "jpeg"
    )
    dm = loaded("cifar10", source, tmp_path / "data", val_size=5)
    assert dm.info["dataset"] == expected
    assert dm.train_set.x.shape[1:] == (3, 32, 32)


# ---- cache ---------------------------------------------------------------------------------------------
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


# ---- split ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "subset,val_size,sizes",
    [(None, 20, (180, 20, 60)), (100, 30, (70, 30, 60)), (50, 10, (40, 10, 50))],
    ids=["full", "subset100", "subset50"],
)
def test_split_sizes_and_disjoint(subset, val_size, sizes, fmnist_mirror, tmp_path):
    dm = loaded("fashion_mnist", fmnist_mirror, tmp_path, subset=subset, val_size=val_size)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == sizes
    train, val = {key(x) for x in dm.train_set.x}, {key(x) for x in dm.val_set.x}
    assert len(train) == sizes[0] and len(val) == sizes[1]  # mirror images are unique, so no duplicates
    assert not train & val


def test_test_subset_is_drawn_across_classes(cifar_folder, tmp_path):
    # the ImageFolder test split is stored sorted by class: its first 20 images hold only 4 classes
    dm = loaded("cifar10", cifar_folder, tmp_path, subset=20, val_size=5)
    x, _ = learnable_images(N_TEST, (3, 32, 32), 1)
    assert len(dm.test_set) == 20
    assert {key(img) for img in dm.test_set.x} <= {key(img) for img in x}
    assert len(set(dm.test_set.y.tolist())) >= 6


def test_split_depends_on_split_seed_only(fmnist_mirror, tmp_path):
    base = loaded("fashion_mnist", fmnist_mirror, tmp_path, split_seed=0, seed=0)
    other_seed = loaded("fashion_mnist", fmnist_mirror, tmp_path, split_seed=0, seed=1)
    other_split = loaded("fashion_mnist", fmnist_mirror, tmp_path, split_seed=1, seed=0)
    assert torch.equal(base.val_set.x, other_seed.val_set.x) and torch.equal(base.val_set.y, other_seed.val_set.y)
    assert torch.equal(base.train_set.x, other_seed.train_set.x)
    assert {key(x) for x in base.val_set.x} != {key(x) for x in other_split.val_set.x}


# ---- config errors -------------------------------------------------------------------------------------
ERRORS = {
    "val_size-equals-train": ("fashion_mnist", "mirror", {"val_size": N_TRAIN}, "data.val_size="),
    "val_size-equals-subset": ("fashion_mnist", "mirror", {"subset": 50, "val_size": 50}, "data.val_size="),
    "subset-above-train": ("fashion_mnist", "mirror", {"subset": N_TRAIN + 1}, "data.subset="),
    "missing-source": ("fashion_mnist", "missing", {}, "data.source="),
    "source-not-an-archive": ("cifar10", "plain-file", {}, "data.source="),
    "offline-empty-root": ("cifar10", None, {}, "data.download="),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_prepare_data_config_errors(case, fmnist_mirror, tmp_path):
    name, source, kw, prefix = ERRORS[case]
    plain_file = tmp_path / "cifar.zip"
    plain_file.write_bytes(b"not a tarball")
    source = {"mirror": fmnist_mirror, "missing": tmp_path / "no-such-mirror", "plain-file": plain_file, None: None}[
        source
    ]
    dm = make_dm(name, source, tmp_path / "data", **kw)
    with pytest.raises(ConfigError) as err:
        dm.prepare_data()
    assert str(err.value).startswith(prefix) and "\n" not in str(err.value)


# ---- normalization -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,mirror", [LAYOUTS[0], LAYOUTS[2]], ids=["fmnist", "cifar"])
def test_standardize_gives_zero_mean_unit_std_on_train_split(name, mirror, request, tmp_path):
    dm = loaded(name, request.getfixturevalue(mirror), tmp_path, normalize="standardize")
    out = dm.transform(dm.train_set.x, train=False).double()
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (out.std(dim=(0, 2, 3), correction=0) - 1).abs().max() < 1e-3


@pytest.mark.parametrize(
    "mode,expected", [("minus_one_one", [-1.0, -0.6, 1.0]), ("none", [0.0, 0.2, 1.0])], ids=["minus_one_one", "none"]
)
def test_fixed_normalizations(mode, expected):
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    out = BatchTransform(mode)(x, train=False)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor(expected))
    assert out.flatten()[0] == expected[0] and out.flatten()[-1] == expected[-1]  # endpoints exact


# ---- augmentation --------------------------------------------------------------------------------------
AUGMENTS = {"crop_flip": {}, "rotation": {}, "erasing": {"p": 1.0}, "full": {}}
STATS = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}


def one_image_batch(n=16) -> torch.Tensor:
    x, _ = learnable_images(1, (3, 32, 32), 0)
    return x.expand(n, -1, -1, -1).contiguous()


@pytest.mark.parametrize("aug", AUGMENTS, ids=list(AUGMENTS))
def test_augmentation_is_per_sample_in_training(aug):
    torch.manual_seed(0)
    x = one_image_batch()
    out = BatchTransform("none", augment_cfg(aug, **AUGMENTS[aug]), (32, 32))(x, train=True)
    assert out.shape == x.shape
    assert len({key(o) for o in out}) >= 2


@pytest.mark.parametrize("normalize", ["none", "minus_one_one", "standardize"])
@pytest.mark.parametrize("aug", ["none", *AUGMENTS], ids=["none", *AUGMENTS])
def test_eval_batches_are_not_augmented(aug, normalize):
    x = one_image_batch()
    stats = STATS if normalize == "standardize" else {}
    plain = BatchTransform(normalize, None, (32, 32), **stats)(x, train=False)
    assert torch.equal(
        BatchTransform(normalize, augment_cfg(aug, **AUGMENTS.get(aug, {})), (32, 32), **stats)(x, train=False), plain
    )
    if normalize == "none":
        assert torch.equal(plain, x.float() / 255)


def test_no_augment_leaves_training_batches_unchanged():
    x = one_image_batch()
    assert torch.equal(BatchTransform("none", augment_cfg("none"), (32, 32))(x, train=True), x.float() / 255)


def test_batch_hook_augments_only_while_training(cifar_folder, tmp_path):
    dm = loaded("cifar10", cifar_folder, tmp_path, augment=augment_cfg("full", p=1.0))
    x, y = next(iter(dm.train_dataloader()))
    assert dm.trainer is None
    out, out_y = dm.on_after_batch_transfer((x, y), 0)
    assert torch.equal(out, x.float() / 255) and torch.equal(out_y, y)

    # while training, augmentation draws from (seed, global_step): the same step replays the same batch
    def at_step(step):
        dm.trainer = SimpleNamespace(training=True, global_step=step, global_rank=0)
        return dm.on_after_batch_transfer((x, y), 0)[0]

    first, again, later = at_step(3), at_step(3), at_step(4)
    assert not torch.equal(first, x.float() / 255)
    assert torch.equal(first, again)
    assert not torch.equal(first, later)


# the epoch order and the loader: tests/run/test_fast_path.py
