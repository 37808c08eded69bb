"""DDP across real processes: `python train.py trainer=ddp trainer.accelerator=cpu trainer.devices=2` (gloo), the
way a user starts it. Lightning starts rank 1 by re-running the command line."""

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, last_weights, same_weights, tiny_run_overrides, train_cli
from hydra.utils import instantiate

from trickbench.models import build_model
from trickbench.module import build_module

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


@pytest.fixture(scope="module")
def overrides(fmnist_mirror, tmp_path_factory):
    # whole epochs; 120 training images (60 per rank), an odd val split (21 + 20 images) that a padding sampler
    # would round up to 42; BatchNorm and dropout on: the ranks' processes must agree on their state
    full = ["trainer.limit_train_batches=null", "trainer.limit_val_batches=null", "trainer.limit_test_batches=null"]
    tiny = tiny_run_overrides(fmnist_mirror, root=tmp_path_factory.mktemp("data"))
    return [*tiny, *full, "data.subset=161", "data.val_size=41", "norm=batch", "model.dropout=0.2", "scheduler=none"]


@pytest.fixture(scope="module")
def dm(overrides):
    """The run's splits, built in this process."""
    dm = instantiate(compose_cfg(overrides).data, augment=None, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def ddp_run(overrides, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    record = ["+callbacks.record._target_=hooks.RecordTrainImages", f"+callbacks.record.folder={tmp / 'seen'}"]
    run = ["trainer.max_epochs=2", "train_clean=true", f"hydra.run.dir={tmp / 'run'}"]
    proc = train_cli(*overrides, *DDP, *run, *record)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, proc


@pytest.mark.slow
def test_two_ranks_see_disjoint_halves_of_the_training_split_every_epoch(ddp_run, dm):
    tmp, _ = ddp_run
    everything = sorted(bytes(img.numpy()) for img in dm.train_set.x)
    ranks = [torch.load(tmp / "seen" / f"rank{r}.pt") for r in (0, 1)]
    assert set(ranks[0]) == set(ranks[1]) == {0, 1, "val"}
    for epoch in (0, 1):
        halves = [[bytes(img.numpy()) for img in r[epoch]] for r in ranks]
        assert len(halves[0]) == len(halves[1]) == len(everything) // 2
        assert not set(halves[0]) & set(halves[1])
        assert sorted(halves[0] + halves[1]) == everything
    assert not torch.equal(ranks[0][0], ranks[0][1])  # a new order each epoch


@pytest.mark.slow
def test_two_ranks_share_the_val_split_with_no_image_evaluated_twice(ddp_run, dm):
    tmp, _ = ddp_run
    shares = [[bytes(img.numpy()) for img in torch.load(tmp / "seen" / f"rank{r}.pt")["val"]] for r in (0, 1)]
    assert sorted(map(len, shares)) == [20, 21]  # 41 images: no padding to 42, no whole split per rank
    assert sorted(shares[0] + shares[1]) == sorted(bytes(img.numpy()) for img in dm.val_set.x)


@pytest.mark.slow
def test_logged_val_accuracy_is_a_single_process_evaluation_of_the_final_weights(ddp_run, overrides, dm):
    tmp, _ = ddp_run
    run_dir = tmp / "run"
    with open(run_dir / "metrics.csv") as fh:
        last = [r for r in csv.DictReader(fh) if r["val_acc"]][-1]
    acc, loss = _last_ckpt_on(dm.val_set, run_dir, overrides, dm)  # the weights the last validation ran with
    assert len(dm.val_set) == 41
    assert float(last["val_acc"]) == acc
    assert float(last["val_loss"]) == pytest.approx(loss, rel=1e-5)


def _last_ckpt_on(split, run_dir, overrides, dm) -> tuple[float, float]:
    """last.ckpt's accuracy (float32, as the metric computes it) and mean loss on split, in one process, at the
    run's precision (bf16-mixed: under CPU autocast, as Lightning runs it)."""
    cfg = compose_cfg(overrides)
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, dm.shape, dm.num_classes)
    module = build_module(cfg, net, dm.num_classes)
    module.load_state_dict(last_weights(run_dir))
    module.eval()
    bf16 = json.loads((run_dir / "results.json").read_text())["precision"] == "bf16-mixed"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = module(dm.transform(split.x, train=False))
        loss = torch.nn.functional.cross_entropy(logits, split.y)
    correct = int((logits.argmax(1) == split.y).sum())
    return float(torch.tensor(correct, dtype=torch.float32) / len(split)), float(loss)


@pytest.mark.slow
def test_train_clean_evaluates_every_training_image_once_across_the_ranks(ddp_run, overrides, dm):
    tmp, _ = ddp_run
    # the run's last test pass is train_clean's
    shares = [[bytes(img.numpy()) for img in torch.load(tmp / "seen" / f"rank{r}-test.pt")] for r in (0, 1)]
    assert list(map(len, shares)) == [60, 60]  # 120 training images, no padding, no whole split per rank
    assert sorted(shares[0] + shares[1]) == sorted(bytes(img.numpy()) for img in dm.train_set.x)
    results = json.loads((tmp / "run" / "results.json").read_text())
    acc, loss = _last_ckpt_on(dm.train_set, tmp / "run", overrides, dm)
    assert results["train_clean"]["acc"] == acc
    assert results["train_clean"]["loss"] == pytest.approx(loss, rel=1e-5)


@pytest.mark.slow
def test_only_rank_zero_writes_the_run_outputs(ddp_run):
    tmp, proc = ddp_run
    run_dir = tmp / "run"
    assert [p.relative_to(tmp) for p in tmp.rglob("results.json")] == [Path("run/results.json")]
    assert [p.name for p in run_dir.glob("*.log")] == ["train.log"]
    assert len(list(tmp.rglob("metrics.csv"))) == 1
    writers = {p.name.split(".")[-2] for p in tmp.rglob("events.out.tfevents*")}  # <time>.<host>.<pid>.<n>
    assert len(writers) == 1  # one process wrote TensorBoard's files
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["epochs"] == 2
    assert results["speed"]["sync_batchnorm"] is False  # per-rank statistics on a CPU
    assert results["threads"] == max((os.cpu_count() or 1) // 2, 1)  # the two ranks share the cores
    assert "sync_dist" not in proc.stderr  # no "use sync_dist" warnings for epoch-level logs


@pytest.mark.slow
def test_a_killed_ddp_run_resumes_from_its_last_checkpoint_to_the_same_weights(ddp_run, overrides, tmp_path):
    tmp, _ = ddp_run
    # both ranks SIGKILLed as epoch 1 starts (as a node failure would): only epoch 0's last.ckpt is left
    kill = [
        "+callbacks.kill._target_=hooks.SignalAt",
        "+callbacks.kill.epoch=1",
        f"+callbacks.kill.marker={tmp_path}/k",
    ]
    run_dir = tmp_path / "run"
    proc = train_cli(*overrides, *DDP, "trainer.max_epochs=2", *kill, f"hydra.run.dir={run_dir}")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not (run_dir / "results.json").exists()
    proc = train_cli(f"resume={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout + proc.stderr
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 2
    assert same_weights(run_dir, tmp / "run")


@pytest.mark.slow
def test_a_val_split_smaller_than_the_ranks_fails_in_one_line(overrides, tmp_path):
    proc = train_cli(*overrides, *DDP, "data.val_size=1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()] == [
        "error: data.val_size=1: at least one val and test image per DDP rank (2 ranks)"
    ]
    assert "Traceback" not in proc.stderr and "GLOBAL_RANK" not in proc.stderr  # before DDP starts
