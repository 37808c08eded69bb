"""The Bag of Tricks preset end to end on a tiny subset: a teacher trained by the template, then every rung of
the cumulative ladder as one real sweep, distillation included."""

import csv
import json
import subprocess
import sys

import pytest
from conftest import ROOT, compose_cfg

from trickbench.train import run

RUNGS = "baseline warmup zero_gamma no_bias_decay resnet_d cosine label_smoothing mixup distill".split()


def _tiny(source, tmp) -> list[str]:
    return [
        f"data.source={source}",
        f"data.root={tmp / 'data'}",
        "data.subset=160",
        "data.val_size=40",
        "data.batch_size=32",
        "data.eval_batch_size=64",
        "trainer.max_epochs=3",  # the warmup rung warms up over 2
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
        "model.width=4",
    ]


@pytest.mark.slow
def test_bag_of_tricks_preset_runs_every_rung_with_a_teacher_it_trained(tmp_path, cifar_tarball):
    teacher_cfg = compose_cfg(
        ["experiment=bag_of_tricks_teacher", *_tiny(cifar_tarball, tmp_path), "model.blocks=[1,1,1,1]"],
        tmp_path / "teacher",
    )
    teacher = run(teacher_cfg)
    assert teacher["status"] == "ok"

    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "experiment=ablation/bag_of_tricks",
        *_tiny(cifar_tarball, tmp_path),
        "model.blocks=[1,1,1]",
        f"teacher_ckpt={teacher['checkpoints']['best']}",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(len(RUNGS))]
    assert [r["status"] for r in results] == ["ok"] * len(RUNGS)
    rungs = [next(o for o in r["overrides"] if o.startswith("ladder=")) for r in results]
    assert rungs == [f"ladder=bag_of_tricks/{r}" for r in RUNGS]  # the paper's order
    params = {rung.split("/")[1]: r["params"] for rung, r in zip(rungs, results, strict=True)}
    assert params["distill"] == params["mixup"] < teacher["params"]  # the teacher is not part of the student
    with open(sweep / "report.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(RUNGS) and [r["config"] for r in rows if r["baseline"] == "True"] == [
        "ladder=bag_of_tricks/baseline"
    ]


BAG = (
    "linear_lr_scaling,warmup,cosine,nesterov,no_bias_decay,zero_gamma,resnet_d,label_smoothing,mixup,cutmix,ema,"
    "sam,stochastic_depth,grad_clip"
)


@pytest.mark.slow
def test_every_bag_of_tricks_switch_at_once_trains(tmp_path, cifar_tarball):
    """All switches of docs/config.md's trick table in one run (distillation: the preset test above; linear_decay and
    cosine both choose the scheduler, so they are the one pair that cannot combine; swa and lookahead, weight
    averages that both set the weights at epoch ends, and swa adds an epoch: tests/run/test_resume_with_tricks.py
    runs swa with sam, stochastic_depth and grad_clip)."""
    cfg = compose_cfg(
        [
            "data=cifar10",
            "model=resnet20",
            "norm=batch",
            f"trick=[{BAG}]",
            "augment.pca_lighting=0.1",
            *_tiny(cifar_tarball, tmp_path),
            "model.blocks=[1,1,1]",
        ],
        tmp_path / "run",
    )
    assert (cfg.optimizer.nesterov, cfg.optimizer.no_bias_decay, cfg.model.variant) == (True, True, "d")
    assert (cfg.augment.mixup_alpha, cfg.augment.cutmix_alpha, cfg.loss.label_smoothing) == (0.2, 1.0, 0.1)
    results = run(cfg)
    assert results["status"] == "ok" and results["epochs"] == 3
    assert results["lr"] == pytest.approx(0.1 * 32 / 256)  # nesterov's lr, scaled to the batch of 32
