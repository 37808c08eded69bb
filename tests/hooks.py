"""Test-only Lightning callbacks, added with +callbacks.<name>._target_=hooks.<Class> (PYTHONPATH=tests): they
interrupt a real run at an exact point (so interruption tests need no sleeps) or record what it was served."""

import os
import signal
import time
from pathlib import Path

import lightning as L
import torch


class SignalAt(L.Callback):
    """Sends `signal` to this process at the start of epoch `epoch` (0-based), batch `batch`; once: `marker`
    is created first, and a run that finds it (the resumed one) is left alone. Under DDP every rank signals
    itself (as SLURM or `kill` of the process group would) and keeps a marker of its own."""

    def __init__(self, epoch: int, marker: str, signal: str = "SIGKILL", batch: int = 0):
        self.epoch, self.batch, self.marker, self.signal = epoch, batch, Path(marker), signal

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        marker = self.marker if trainer.global_rank == 0 else Path(f"{self.marker}.rank{trainer.global_rank}")
        if trainer.current_epoch == self.epoch and batch_idx == self.batch and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), getattr(signal, self.signal))


class RecordTrainImages(L.Callback):
    """Saves the images each rank was served as uint8 (the run must use data.normalize=none and augment=none, so
    x * 255 gives the stored pixels back): <folder>/rank<R>.pt = {epoch: N,C,H,W training images, "val": the
    last validation's images}."""

    def __init__(self, folder: str):
        self.folder, self.seen = Path(folder), {}

    @staticmethod
    def _pixels(batch):
        return (batch[0].detach().float() * 255).round().to(torch.uint8).cpu()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).append(self._pixels(batch))

    def on_validation_epoch_start(self, trainer, pl_module):
        self.seen["val"] = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen["val"].append(self._pixels(batch))

    def on_train_end(self, trainer, pl_module):
        self.folder.mkdir(parents=True, exist_ok=True)
        epochs = {e: torch.cat(batches) for e, batches in self.seen.items()}
        torch.save(epochs, self.folder / f"rank{trainer.global_rank}.pt")


class SleepPerBatch(L.Callback):
    """Sleeps `seconds` after every training batch of a run's first start (a run resumed from a checkpoint goes at
    full speed): slow enough for a time limit to land mid-epoch, and done before the next one after a requeue."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_fit_start(self, trainer, pl_module):
        if trainer.ckpt_path is not None:
            self.seconds = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.seconds)


class RaiseAt(L.Callback):
    """Raises at the start of epoch `epoch` (0-based): an in-process crash, after the epochs before it saved last.ckpt
    (for runs started with trickbench.train.run, which a SIGKILL would take down with the test)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"crash at the start of epoch {self.epoch}")
