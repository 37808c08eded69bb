"""End to end: real (tiny) training runs, in-process and through the CLI."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, check_contract, compose_cfg, tiny_run_overrides

from trickbench.loggers import COLUMNS, read_metrics_csv
from trickbench.train import run


def _cli(*args, cwd=ROOT, timeout=240):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(params=["fashion_mnist", "cifar10"])
def one_epoch_run(request, tmp_path, fmnist_mirror, cifar_tarball):
    source = fmnist_mirror if request.param == "fashion_mnist" else cifar_tarball
    cfg = compose_cfg(tiny_run_overrides(source, request.param, tmp_path / "data"), tmp_path / "run")
    return request.param, run(cfg), tmp_path / "run"


def test_one_epoch_run_writes_results_metrics_and_checkpoints(one_epoch_run):
    dataset, results, out = one_epoch_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    check_contract(on_disk)
    assert on_disk["status"] == "ok" and on_disk["error"] is None
    assert "train_clean" not in on_disk and "test_last" not in on_disk  # off unless a results preset asks
    assert on_disk["metrics_lr"] == "epoch_start"
    assert on_disk["dataset"] == dataset and on_disk["device"] == "cpu" and on_disk["epochs"] == 1
    assert 0.0 <= on_disk["test"]["acc"] <= 1.0 and on_disk["test"]["loss"] > 0
    assert on_disk["val"]["acc_best"] == on_disk["val"]["acc_last"]  # one epoch: best is last
    assert len(on_disk["source_sha256"]) == 64 and on_disk["images_per_s"] > 0
    assert on_disk["params"] == (4 * (1 if dataset == "fashion_mnist" else 3) * 9 + 4) + (8 * 4 * 9 + 8) + (
        8 * (7 * 7 if dataset == "fashion_mnist" else 8 * 8) * 16 + 16
    ) + (16 * 10 + 10)
    rows = read_metrics_csv(out / "metrics.csv")
    assert len(rows) == 1 and list(rows[0]) == COLUMNS
    assert rows[0]["epoch"] == 0 and rows[0]["lr"] == pytest.approx(1e-3)
    assert rows[0]["val_acc"] == pytest.approx(on_disk["val"]["acc_last"])
    assert rows[0]["train_loss"] == pytest.approx(on_disk["train"]["loss_last"])
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch000") for n in ckpts)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path, fmnist_mirror):
    # augmentation and dropout on, so per-step reseeding is exercised, not just the init
    extra = ["augment=full", "model.dropout=0.3", "trainer.limit_train_batches=4"]
    results = []
    for i, seed in enumerate((1, 1, 2)):
        cfg = compose_cfg(
            [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), *extra, f"seed={seed}"], tmp_path / f"run{i}"
        )
        results.append(run(cfg))
    (a, b, c) = [(r["val"]["acc_last"], r["train"]["loss_last"]) for r in results]
    assert a == b
    assert a[1] != c[1]


@pytest.mark.slow
def test_multirun_writes_one_results_json_per_job(tmp_path, fmnist_mirror):
    sweep = tmp_path / "sweep"
    args = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), f"hydra.sweep.dir={sweep}"]
    proc = _cli("train.py", "-m", "trick=none,batchnorm", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = sorted(sweep.glob("*/results.json"))
    assert [p.parent.name for p in results] == ["0", "1"]
    assert [json.loads(p.read_text())["overrides"][0] for p in results] == ["trick=none", "trick=batchnorm"]
    params = [json.loads(p.read_text())["params"] for p in results]
    assert params[0] < params[1]  # batchnorm adds gamma/beta (and drops conv biases)
    assert all(json.loads(p.read_text())["status"] == "ok" for p in results)


@pytest.mark.slow
def test_eval_rebuilds_the_run_from_its_checkpoint(tmp_path, fmnist_mirror):
    cfg = compose_cfg(tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), tmp_path / "run")
    results = run(cfg)
    proc = _cli(
        "eval.py",
        f"ckpt_path={results['checkpoints']['best']}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.limit_test_batches=2",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluated["test"]["acc"] == pytest.approx(results["test"]["acc"])
    assert evaluated["test"]["loss"] == pytest.approx(results["test"]["loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, first_line",
    [
        ("optimizer.lr=-1", "error: optimizer.lr=-1"),
        ("seed=abc", "error: seed='abc': an integer"),
    ],
)
def test_cli_bad_value_exits_2_with_one_line_and_no_traceback(tmp_path, override, first_line):
    proc = _cli("train.py", override, f"hydra.run.dir={tmp_path}", "data.source=/nonexistent")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[0].startswith(first_line), proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_eval_missing_checkpoint_is_one_line(tmp_path):
    proc = _cli("eval.py", f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[0].startswith("error: ckpt_path=")


def test_failed_download_says_how_to_point_at_an_offline_copy(tmp_path, monkeypatch):
    from urllib.error import URLError

    from trickbench.data import datamodule
    from trickbench.errors import TrickbenchError

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datamodule, "load_official", offline)
    dm = datamodule.ImageDataModule("cifar10", root=str(tmp_path))
    with pytest.raises(TrickbenchError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "\n" not in message and message.startswith("could not download cifar10")
    assert "data.source=<a folder or .tar.gz with train/<class>/*, test/<class>/*>" in message
