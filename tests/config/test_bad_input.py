"""Bad input is caught before long work: an unknown option or key (Hydra's message), a bad value (validate), a bad
data source (prepare_data) or a bad checkpoint (eval) stops with one line naming the key, the value and what is
allowed; nothing half-written stays in the cache, and the next good run works."""

import functools
import gzip
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CIFAR_CLASSES, CONF, ROOT, compose_cfg, learnable_images, tiny_run_overrides
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.io import encode_png

from trickbench.config.validate import validate
from trickbench.data import DATASETS
from trickbench.errors import ConfigError, TrickbenchError
from trickbench.evaluate import evaluate
from trickbench.train import run

# the groups conf/train.yaml composes (hydra: Hydra's own settings)
GROUPS = sorted(k for d in OmegaConf.load(CONF / "train.yaml").defaults if not isinstance(d, str) for k in d)
GROUPS.remove("hydra")
_ABSENT = object()


def _first_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.strip())


# ---- unknown option, misspelled key: Hydra's own message names them ----------------------------------------------
@pytest.mark.parametrize("group", GROUPS)
def test_unknown_option_in_every_group_names_it_and_lists_the_options(group):
    with pytest.raises(MissingConfigException) as err:
        compose_cfg([f"{group}=nope"])
    lines = str(err.value).splitlines()
    assert lines[0] == f"In 'train': Could not find '{group}/nope'"
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    if options:  # Hydra lists a group's own files, not those in sub-folders (e.g. ladder/generalization/*)
        listed = lines[lines.index(f"Available options in '{group}':") + 1 :][: len(options)]
        assert listed == [f"\t{o}" for o in options]


@pytest.mark.parametrize("override", ["optimizer.lrr=0.1", "seeed=1", "data.batchsize=8"])
def test_misspelled_key_is_named(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg([override])
    assert str(err.value).splitlines()[0] == f"Could not override '{key}'."


# ---- bad values: validate() before any data is touched ------------------------------------------------------------
@functools.cache
def _composed(groups: tuple[str, ...]):
    return compose_cfg(list(groups))


def compose_adding_absent_keys(overrides: list[str]):
    """Compose, with `+key=value` for a key that the chosen groups do not have (yet): the rule must hold either way."""
    base = _composed(tuple(o for o in overrides if "." not in o.split("=")[0]))
    plain_or_added = [
        o if OmegaConf.select(base, o.split("=")[0], default=_ABSENT) is not _ABSENT else f"+{o}" for o in overrides
    ]
    return compose_cfg(plain_or_added)


# overrides, key, the value as the config holds it, what the message says is allowed
BAD_VALUES = [
    (["trainer.max_epochs=abc"], "trainer.max_epochs", "abc", "an integer >= 1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs", 0, "an integer >= 1"),
    (["data.split_seed=abc"], "data.split_seed", "abc", "an integer"),
    (["optimizer.lr=abc"], "optimizer.lr", "abc", "a number > 0"),
    (["optimizer=sgd", "optimizer.momentum=1.0"], "optimizer.momentum", 1.0, "a number in [0, 1)"),
    (["optimizer=nesterov", "optimizer.momentum=-0.1"], "optimizer.momentum", -0.1, "a number in [0, 1)"),
    (["optimizer.weight_decay=-1e-4"], "optimizer.weight_decay", -1e-4, "a number >= 0"),
    (["model.conv_dropout=1.5"], "model.conv_dropout", 1.5, "a number in [0, 1)"),
    (["loss.label_smoothing=1.0"], "loss.label_smoothing", 1.0, "a number in [0, 1)"),
    (["loss.label_smoothing=-0.1"], "loss.label_smoothing", -0.1, "a number in [0, 1)"),
    (["augment.mixup_alpha=-0.2"], "augment.mixup_alpha", -0.2, "a number >= 0"),
    (["augment.cutmix_alpha=-1.0"], "augment.cutmix_alpha", -1.0, "a number >= 0"),
    (["data.batch_size=abc"], "data.batch_size", "abc", "an integer >= 1"),
    (["data.eval_batch_size=0"], "data.eval_batch_size", 0, "an integer >= 1"),
    (["data.val_size=0"], "data.val_size", 0, "an integer >= 1"),
    (["data.subset=1"], "data.subset", 1, "null or an integer >= 2"),
    (["data.name=mnist"], "data.name", "mnist", f"one of {sorted(DATASETS)}"),
    (["data.subset=100", "data.val_size=100"], "data.val_size", 100, "less than data.subset=100"),
    (["scheduler.warmup_epochs=-1"], "scheduler.warmup_epochs", -1, "an integer >= 0"),
    (["scheduler.warmup_epochs=1.5"], "scheduler.warmup_epochs", 1.5, "an integer >= 0"),
    (
        ["trainer.max_epochs=5", "scheduler.warmup_epochs=5"],
        "scheduler.warmup_epochs",
        5,
        "less than trainer.max_epochs=5",
    ),
    (["distill.teacher_ckpt=/no/such/teacher.ckpt"], "distill.teacher_ckpt", "/no/such/teacher.ckpt", "existing"),
]


@pytest.mark.parametrize("overrides,key,value,allowed", BAD_VALUES, ids=[" ".join(o) for o, *_ in BAD_VALUES])
def test_validate_rejects_bad_value_in_one_line(overrides, key, value, allowed):
    cfg = compose_adding_absent_keys(overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert err.value.key == key and message.startswith(f"{key}={value!r}: ")
    assert allowed in message and "\n" not in message


def test_limits_set_by_another_key_accept_the_value_just_below():
    validate(compose_adding_absent_keys(["trainer.max_epochs=5", "scheduler.warmup_epochs=4"]))
    validate(compose_adding_absent_keys(["data.subset=100", "data.val_size=99"]))


# ---- bad data sources: prepare_data, before training --------------------------------------------------------------
def write_imagefolder(folder: Path, classes=CIFAR_CLASSES, shape=(3, 32, 32), n_train=22, n_test=11) -> Path:
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, _ = learnable_images(n, shape, seed)
        for i in range(n):
            d = folder / "tiny" / split / classes[i % len(classes)]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:04d}.png").write_bytes(encode_png(x[i]).numpy().tobytes())
    return folder


def truncated_copy(path: Path, dest: Path) -> Path:
    dest.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return dest


def copy_with(mirror: Path, dest: Path, name: str, raw: bytes) -> Path:
    """A copy of mirror with one file replaced."""
    shutil.copytree(mirror, dest)
    (dest / name).write_bytes(raw)
    return dest


def gz_of_truncated_idx(fmnist_mirror: Path) -> bytes:
    raw = gzip.decompress((fmnist_mirror / "train-images-idx3-ubyte.gz").read_bytes())
    return gzip.compress(raw[:-28])


def labels_idx(n: int) -> bytes:
    return gzip.compress(struct.pack(">BBBBi", 0, 0, 8, 1, n) + bytes(i % 10 for i in range(n)))


# case: dataset, how to make the bad source from (tmp, fixtures), what the message says
DATA_CASES = {
    "cifar-tarball-as-fashion-mnist": ("fashion_mnist", lambda t, f: f.cifar_tarball, "an IDX mirror must hold"),
    "idx-folder-as-cifar10": ("cifar10", lambda t, f: f.fmnist, "an ImageFolder mirror must hold"),
    "one-gz-file-not-a-tarball": (
        "fashion_mnist",
        lambda t, f: f.fmnist / "train-labels-idx1-ubyte.gz",
        "a folder or a complete .tar/.tar.gz archive",
    ),
    "truncated-gz": (
        "fashion_mnist",
        lambda t, f: copy_with(
            f.fmnist,
            t / "m",
            "train-images-idx3-ubyte.gz",
            truncated_copy(f.fmnist / "train-images-idx3-ubyte.gz", t / "x.gz").read_bytes(),
        ),
        "train-images-idx3-ubyte.gz: truncated or corrupt gzip",
    ),
    "truncated-idx-in-complete-gz": (
        "fashion_mnist",
        lambda t, f: copy_with(f.fmnist, t / "m", "train-images-idx3-ubyte.gz", gz_of_truncated_idx(f.fmnist)),
        f"{200 * 28 * 28 - 28 + 16} bytes, but its header promises 16",
    ),
    "labels-do-not-match-images": (
        "fashion_mnist",
        lambda t, f: copy_with(f.fmnist, t / "m", "train-labels-idx1-ubyte.gz", labels_idx(199)),
        "found (200, 28, 28) and (199,)",
    ),
    "truncated-tar-gz": (
        "cifar10",
        lambda t, f: truncated_copy(f.cifar_tarball, t / "cifar.tar.gz"),
        "a folder or a complete .tar/.tar.gz archive; reading it failed: ",
    ),
    "missing-class": (
        "cifar10",
        lambda t, f: write_imagefolder(t / "m", classes=CIFAR_CLASSES[:9]),
        "missing ['truck'], extra []",
    ),
    "extra-class": (
        "cifar10",
        lambda t, f: write_imagefolder(t / "m", classes=[*CIFAR_CLASSES[:9], "truck", "zebra"]),
        "missing [], extra ['zebra']",
    ),
    "images-30x30": (
        "cifar10",
        lambda t, f: write_imagefolder(t / "m", shape=(3, 30, 30)),
        "cifar10 needs (3, 32, 32) images; train has (3, 30, 30)",
    ),
    "undecodable-image": (
        "cifar10",
        lambda t, f: copy_with(f.cifar_folder, t / "m", "cifar10-tiny/test/cat/0003.png", b"not a png"),
        "decodable images; cifar10-tiny/test/cat/0003.png: ",
    ),
    "download-off-and-no-data": ("cifar10", lambda t, f: None, "allow the download or set data.source="),
}


def datamodule(name: str, source: Path | None, root: Path):
    overrides = [f"data={name}", f"data.root={root}", "data.download=false", "data.val_size=20"]
    cfg = compose_cfg([*overrides, f"data.source={source}" if source else "data.source=null"])
    validate(cfg)
    return instantiate(cfg.data, augment=None, seed=0)


@pytest.mark.parametrize("case", DATA_CASES, ids=list(DATA_CASES))
def test_bad_source_fails_in_prepare_data_and_leaves_no_cache(
    case, fmnist_mirror, cifar_folder, cifar_tarball, tmp_path
):
    name, make, expected = DATA_CASES[case]
    fixtures = SimpleNamespace(fmnist=fmnist_mirror, cifar_folder=cifar_folder, cifar_tarball=cifar_tarball)
    source, root = make(tmp_path, fixtures), tmp_path / "data"
    with pytest.raises(TrickbenchError) as err:
        datamodule(name, source, root).prepare_data()
    message = str(err.value)
    assert "\n" not in message and expected in message, message
    assert message.startswith(f"data.source={str(source)!r}: " if source else "data.download=False: ")
    cache = root / "cache"
    assert not list(cache.glob("*.pt")) and not list(cache.glob("*.tmp*"))

    good = datamodule(name, fmnist_mirror if name == "fashion_mnist" else cifar_folder, root)
    good.prepare_data()
    good.setup("fit")
    assert good.cache_hit is False and len(good.train_set) + len(good.val_set) == 200
    assert len(list(cache.glob("*.pt"))) == 1 and not list(cache.glob("*.tmp*"))


def test_unreadable_cache_file_is_decoded_again(fmnist_mirror, tmp_path):
    first = datamodule("fashion_mnist", fmnist_mirror, tmp_path)
    first.prepare_data()
    (cache_file,) = (tmp_path / "cache").glob("*.pt")
    truncated_copy(cache_file, cache_file)
    again = datamodule("fashion_mnist", fmnist_mirror, tmp_path)
    again.prepare_data()
    assert again.cache_hit is False
    assert torch.equal(torch.load(cache_file, weights_only=True)["train_x"], again._data["train_x"])


# ---- bad checkpoints: eval.py ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, fmnist_mirror) -> dict:
    out = tmp_path_factory.mktemp("trained")
    results = run(compose_cfg(tiny_run_overrides(fmnist_mirror, root=out / "data"), out / "run"))
    checkpoint = torch.load(results["checkpoints"]["best"], map_location="cpu", weights_only=True)
    return {"checkpoint": checkpoint}


def with_config(checkpoint: dict, **changes) -> dict:
    """The checkpoint with its stored config changed (dotted keys): a checkpoint of another model or dataset."""
    config = OmegaConf.create(checkpoint["hyper_parameters"]["config"])
    for key, value in changes.items():
        OmegaConf.update(config, key, value)
    return {
        **checkpoint,
        "hyper_parameters": {**checkpoint["hyper_parameters"], "config": OmegaConf.to_container(config)},
    }


def save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# case: how to make the file from (tmp, a real checkpoint), what the message says
CKPT_CASES = {
    "text-file": (lambda t, c: write_text(t / "notes.ckpt", "hello"), ["torch.load failed"]),
    "truncated": (lambda t, c: truncated_copy(save(c, t / "full.ckpt"), t / "half.ckpt"), ["torch.load failed"]),
    "a-data-cache-not-a-checkpoint": (
        lambda t, c: save({"train_x": torch.zeros(2, 1, 28, 28, dtype=torch.uint8)}, t / "cache.pt"),
        ["a checkpoint written by train.py (it stores the run's config and weights)"],
    ),
    # trained with channels [4, 8] on 1x28x28: conv1 weight and bias, conv2 weight change with [8, 8]
    "another-model": (
        lambda t, c: save(with_config(c, **{"model.channels": [8, 8]}), t / "wide.ckpt"),
        [
            "weights that fit the model its config describes (cnn); 3 do not",
            "is (4, 1, 3, 3), the model needs (8, 1, 3, 3)",
        ],
    ),
    # on 3x32x32: conv1 weight takes 3 input channels, the head's first Linear 8*8*8 inputs instead of 8*7*7
    "another-dataset": (
        lambda t, c: save(with_config(c, **{"data.name": "cifar10"}), t / "cifar.ckpt"),
        ["2 do not", "is (4, 1, 3, 3), the model needs (4, 3, 3, 3)"],
    ),
}


@pytest.mark.parametrize("case", CKPT_CASES, ids=list(CKPT_CASES))
def test_eval_rejects_a_bad_checkpoint_in_one_line(case, trained, tmp_path):
    make, expected = CKPT_CASES[case]
    path = make(tmp_path, trained["checkpoint"])
    cfg = OmegaConf.create({"ckpt_path": str(path), "data": {"source": None, "root": None}})
    with pytest.raises(ConfigError) as err:
        evaluate(cfg)
    message = str(err.value)
    assert message.startswith(f"ckpt_path={str(path)!r}: ") and "\n" not in message, message
    assert all(fragment in message for fragment in expected), message


# ---- the real commands: exit code, one line on stderr, no traceback --------------------------------------------------
# Values that once reached a builder (a traceback, or a net that is not the one its name says), and the
# error line each gives; each command has no data to read (no download, an empty cache), so a read would fail otherwise
REGRESSIONS = {
    "resnet-width-0": (["model=resnet20", "model.width=0"], "model.width=0: a positive integer"),
    "unknown-pool": (["model=cnn", "model.pool=median"], "model.pool='median': one of ['max', 'avg', 'none']"),
    "groups-0": (["norm=group", "norm.groups=0"], "norm.groups=0: a positive integer"),
    "empty-stages": (["model=resnet20", "model.blocks=[0,0,0]"], "model.blocks=[0, 0, 0]: at least one block"),
    "no-conv": (["model.channels=[]"], "model.channels=[]: a non-empty list of integers >= 1"),
}


@pytest.fixture(scope="module")
def cli(trained, cifar_tarball, tmp_path_factory) -> dict:
    """The real commands, started together: each is mostly Python start-up, which overlaps."""
    tmp = tmp_path_factory.mktemp("cli")
    bad_tarball = truncated_copy(cifar_tarball, tmp / "cifar-cut.tar.gz")
    other_dataset = save(with_config(trained["checkpoint"], **{"data.name": "cifar10"}), tmp / "cifar.ckpt")
    no_data = ["data.download=false", f"data.root={tmp / 'none'}"]
    finished = tmp / "finished-run"
    finished.mkdir()
    (finished / "results.json").write_text(json.dumps({"status": "ok", "overrides": ["seed=1"]}))
    commands = {
        "unknown-option": ["train.py", "model=nope"],
        "wrong-type": ["train.py", "trainer.max_epochs=abc", "data.source=/no/such/mirror"],
        "truncated-tarball": ["train.py", *tiny_run_overrides(bad_tarball, "cifar10", tmp / "data")],
        "eval-other-dataset": ["eval.py", f"ckpt_path={other_dataset}"],
        "finished-run-dir": ["train.py", "seed=2", f"hydra.run.dir={finished}"],
        **{name: ["train.py", *o, *no_data] for name, (o, _) in REGRESSIONS.items()},
    }
    started = {
        name: subprocess.Popen(
            [sys.executable, *args, *([] if "run-dir" in name else [f"hydra.run.dir={tmp / name}"])],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    done = {name: finish(p) for name, p in started.items()}
    return {"tmp": tmp, "bad_tarball": bad_tarball, "other_dataset": other_dataset, "finished": finished, **done}


def finish(p: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = p.communicate(timeout=240)
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


@pytest.mark.slow
def test_cli_unknown_option_is_one_line_naming_the_options(cli):
    proc = cli["unknown-option"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [_first_line(proc.stderr)]
    assert _first_line(proc.stderr).startswith("error: model='nope': no such option; model has: cnn, ")
    assert "resnet20" in proc.stderr


@pytest.mark.slow
def test_cli_wrong_type_stops_before_any_data_work(cli):
    proc = cli["wrong-type"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _first_line(proc.stderr) == "error: trainer.max_epochs='abc': an integer >= 1"
    assert json.loads((cli["tmp"] / "wrong-type" / "results.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_cli_truncated_tarball_then_a_good_run_on_the_same_root(cli, cifar_tarball):
    proc = cli["truncated-tarball"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # Lightning's start-up lines come first: the error is the last line, and the only one
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith(f"error: data.source={str(cli['bad_tarball'])!r}: a folder or a complete .tar")
    cache = cli["tmp"] / "data" / "cache"
    assert not list(cache.glob("*.pt")) and not list(cache.glob("*.tmp*"))
    results = run(compose_cfg(tiny_run_overrides(cifar_tarball, "cifar10", cli["tmp"] / "data"), cli["tmp"] / "good"))
    assert results["status"] == "ok" and results["dataset"] == "cifar10"
    assert len(list(cache.glob("*.pt"))) == 1


@pytest.mark.slow
def test_cli_eval_checkpoint_of_another_dataset(cli):
    proc = cli["eval-other-dataset"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _first_line(proc.stderr).startswith(
        f"error: ckpt_path={str(cli['other_dataset'])!r}: weights that fit the model"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", REGRESSIONS)
def test_cli_refuses_what_once_reached_a_builder(cli, name):
    proc = cli[name]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {REGRESSIONS[name][1]}"), proc.stderr


@pytest.mark.slow
def test_cli_run_dir_holding_a_finished_run_says_so_and_what_to_do(cli):
    proc, folder = cli["finished-run-dir"], cli["finished"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: hydra.run.dir={str(folder)!r}: holds a finished run (results.json; it trained ['seed=1']); give this "
        "run a new folder (another hydra.run.dir, or none for a new timestamped one), or continue that run with "
        f"resume={folder}"
    ]
    assert json.loads((folder / "results.json").read_text()) == {"status": "ok", "overrides": ["seed=1"]}
