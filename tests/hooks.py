"""Test-only Lightning callbacks, added with +callbacks.<name>._target_=hooks.<Class> (PYTHONPATH=tests): they
interrupt a real run at an exact point (so interruption tests need no sleeps) or record what it was served."""

import errno
import os
import shutil
import signal
import time
from pathlib import Path

import lightning as L
import torch


class SignalAt(L.Callback):
    """Sends `signal` to this process at the start of epoch `epoch` (0-based), batch `batch` of `stage` (train,
    validate: fit's validation, not the sanity check; test: the epoch is ignored); once: `marker` is created first,
    and a run that finds it (a resumed one) is left alone. group=true signals the whole process group, as Ctrl-C in a
    terminal or `kill -- -PGID` does (a sweep's parent and its workers). Under DDP every rank signals itself (as
    SLURM or `kill` of the process group would) and keeps a marker of its own."""

    def __init__(
        self,
        epoch: int,
        marker: str,
        signal: str = "SIGKILL",
        batch: int = 0,
        stage: str = "train",
        group: bool = False,
    ):
        self.epoch, self.batch, self.marker, self.signal = epoch, batch, Path(marker), signal
        self.stage, self.group = stage, group

    def _maybe(self, trainer, stage, batch_idx):
        marker = self.marker if trainer.global_rank == 0 else Path(f"{self.marker}.rank{trainer.global_rank}")
        epoch_ok = stage == "test" or trainer.current_epoch == self.epoch
        if stage == self.stage and epoch_ok and batch_idx == self.batch and not marker.exists():
            marker.touch()
            sig = getattr(signal, self.signal)
            os.killpg(os.getpgid(0), sig) if self.group else os.kill(os.getpid(), sig)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._maybe(trainer, "train", batch_idx)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._maybe(trainer, "validate", batch_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._maybe(trainer, "test", batch_idx)


class RecordTrainImages(L.Callback):
    """Saves the images each rank was served as uint8 (the run must use data.normalize=none and augment=none, so
    x * 255 gives the stored pixels back): <folder>/rank<R>.pt = {epoch: N,C,H,W training images, "val": the
    last validation's images}; <folder>/rank<R>-test.pt: the last test pass's images."""

    def __init__(self, folder: str):
        self.folder, self.seen, self.tested = Path(folder), {}, []

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

    def on_test_epoch_start(self, trainer, pl_module):
        self.tested = []

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.tested.append(self._pixels(batch))

    def on_test_end(self, trainer, pl_module):
        torch.save(torch.cat(self.tested), self.folder / f"rank{trainer.global_rank}-test.pt")


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


class WaitAt(L.Callback):
    """At the start of epoch `epoch`, batch 0 of the first start: creates `<marker>.ready`, then waits (at most a
    minute) until the test creates `<marker>.go`; a run that is still running, for the test to act on meanwhile."""

    def __init__(self, epoch: int, marker: str):
        self.epoch, self.marker = epoch, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        ready, go = Path(f"{self.marker}.ready"), Path(f"{self.marker}.go")
        if trainer.current_epoch == self.epoch and batch_idx == 0 and not ready.exists():
            ready.touch()
            deadline = time.monotonic() + 60
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.05)


class KillDuringSave(L.Callback):
    """SIGKILLs this process inside the checkpoint IO's save of <name> at the end of epoch `epoch`, after the bytes
    are written and before they are renamed into place; once (`marker`). Writes the checkpoint IO's class name to
    `<marker>.io`, so the test can see which writer every checkpoint (best, last, SIGTERM's) goes through."""

    def __init__(self, marker: str, epoch: int, name: str = "last.ckpt"):
        self.marker, self.epoch, self.name = Path(marker), epoch, name

    def setup(self, trainer, pl_module, stage):
        io = trainer.strategy.checkpoint_io
        Path(f"{self.marker}.io").write_text(type(io).__name__)
        save = io.save_checkpoint

        def save_then_maybe_die(checkpoint, path, storage_options=None):
            if Path(path).name == self.name and trainer.current_epoch == self.epoch and not self.marker.exists():
                self.marker.touch()
                os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # the bytes are written by now
            return save(checkpoint, path, storage_options)

        io.save_checkpoint = save_then_maybe_die


class WriteFailsAt(L.Callback):
    """The first save of last.ckpt fails inside the checkpoint IO's write (its fsync raises `error`, an errno name):
    ENOSPC where no small file system can be mounted, EACCES or EROFS as a mid-run permission or read-only fault
    (root ignores file modes, so no chmod can make one); once (`marker`)."""

    def __init__(self, marker: str, error: str = "ENOSPC"):
        self.marker, self.code = Path(marker), getattr(errno, error)

    def setup(self, trainer, pl_module, stage):
        io = trainer.strategy.checkpoint_io
        save, fsync = io.save_checkpoint, os.fsync

        def failing(fd):
            os.fsync = fsync
            raise OSError(self.code, os.strerror(self.code))

        def save_failing_once(checkpoint, path, storage_options=None):
            if Path(path).name == "last.ckpt" and not self.marker.exists():
                self.marker.touch()
                os.fsync = failing
            return save(checkpoint, path, storage_options)

        io.save_checkpoint = save_failing_once


class RemoveFolderAt(L.Callback):
    """Removes `folder` (the run's own) at the start of epoch `epoch`, as a user cleaning up logs/ by hand would."""

    def __init__(self, folder: str, epoch: int):
        self.folder, self.epoch = Path(folder), epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            shutil.rmtree(self.folder)
