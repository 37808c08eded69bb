"""Run records written by hand, as a results sweep's job leaves them: results.json, metrics.csv, .hydra/config.yaml."""

import csv
import json
from pathlib import Path

from trickbench.loggers import COLUMNS

CIFAR = "cifar10 (JPEG q75 copy)"


def job(
    folder: Path,
    overrides,
    seed,
    train,
    test_last,
    test=None,
    dataset=CIFAR,
    precision="32-true",
    curve=None,
    train_clean=None,
    lr=None,
    extra=None,
    config=True,
):
    """One job's record: train / test accuracies as fractions; curve: train accuracy per epoch; lr: the lr column
    per epoch, with results.json saying metrics.csv logs each epoch's own lr (metrics_lr: epoch_start)."""
    folder.mkdir(parents=True)
    results = {
        "status": "ok",
        "error": None,
        "seed": seed,
        "epochs": len(curve or [0] * 8),
        "wall_time_s": 10.0 + seed,
        "device": "cpu",
        "overrides": [*overrides, f"seed={seed}", "experiment=results/x", "scale=cpu"],
        "dataset": dataset,
        "test": {"acc": test if test is not None else test_last, "loss": 1.0},
        "test_last": {"acc": test_last},
        "val": {"acc_best": test_last + 0.01, "acc_last": test_last},
        "train": {"acc_last": train},
        "precision": precision,
        **({"train_clean": {"acc": train_clean}} if train_clean is not None else {}),
        **({"metrics_lr": "epoch_start"} if lr is not None else {}),
        **(extra or {}),
    }
    (folder / "results.json").write_text(json.dumps(results))
    if config:
        (folder / ".hydra").mkdir()
        subset = None if dataset == "fashion_mnist" else 8000
        data = {"subset": subset, "val_size": 800 if subset else 5000}
        cfg = {"data": data, "results": {"widths": [16, 32, 64, 128]}}
        (folder / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
    with open(folder / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for e, acc in enumerate(curve or [train] * 8):
            w.writerow(
                {
                    "epoch": e,
                    "step": 57 * (e + 1),
                    "train_loss": 2.0 / (e + 1),
                    "train_acc": acc,
                    "val_acc": test_last * (e + 1) / 8,
                    "lr": None if lr is None else lr[e],
                }
            )
