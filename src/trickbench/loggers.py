"""EpochCSVLogger: one row per epoch in metrics.csv, the sweep report's stable input. Written by hand:
Lightning's CSVLogger writes one row per log call, mixing step rows (lr) and epoch rows (loss, acc)."""

import csv
import os
import time
from pathlib import Path

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from trickbench.rules import Rule, text

RULES = [Rule("logger.csv.path", lambda v: text(v) and not Path(v).is_dir(), "a file path, not a folder (metrics.csv)")]

COLUMNS = [
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "grad_norm_first",
    "grad_norm_last",
    "seconds",
]
EPOCH_METRICS = {
    "train/loss": "train_loss",
    "train/acc": "train_acc",
    "val/loss": "val_loss",
    "val/acc": "val_acc",
    "train/lr": "lr",
    "train/grad_norm_first": "grad_norm_first",
    "train/grad_norm_last": "grad_norm_last",
}


def read_metrics_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(fh)]


class EpochCSVLogger(Logger):
    def __init__(self, path: str):
        super().__init__()
        self.path = Path(path)
        self._start = time.monotonic()
        # a resumed run keeps the rows of the epochs it already has
        rows = read_metrics_csv(self.path) if self.path.exists() else []
        self.path.parent.mkdir(parents=True, exist_ok=True)  # here, not in save(): a run folder removed while the
        # run runs is an error (train.main_task's one line), not recreated with part of a run in it
        self._rows = {int(r["epoch"]): {**r, "epoch": int(r["epoch"]), "step": int(r["step"] or 0)} for r in rows}

    @property
    def name(self) -> str:
        return "epoch_csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the config is in .hydra/ and results.json

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if not any(k in metrics for k in EPOCH_METRICS) or "epoch" not in metrics:
            return
        row = self._rows.setdefault(int(metrics["epoch"]), {"epoch": int(metrics["epoch"])})
        row.update({col: float(metrics[k]) for k, col in EPOCH_METRICS.items() if k in metrics})
        row.update(step=step, seconds=round(time.monotonic() - self._start, 3))
        self.save()

    @rank_zero_only
    def save(self) -> None:
        """Whole or not at all (a temporary file renamed): a kill or a full disk mid-write would cut the rows a
        resumed run reads back."""
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, COLUMNS)
                writer.writeheader()
                for epoch in sorted(self._rows):
                    writer.writerow({c: self._rows[epoch].get(c) for c in COLUMNS})
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.filename is None or str(e.filename) == str(tmp):
                e.filename = str(self.path)
            raise
