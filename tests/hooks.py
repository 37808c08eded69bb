"""Test-only Lightning callbacks, added with +callbacks.<name>._target_=hooks.<Class> (PYTHONPATH=tests): they
interrupt a real run at an exact point, so interruption tests need no sleeps."""

import os
import signal
from pathlib import Path

import lightning as L


class SignalAt(L.Callback):
    """Sends `signal` to this process at the start of epoch `epoch` (0-based), batch `batch`; once: `marker`
    is created first, and a run that finds it (the resumed one) is left alone."""

    def __init__(self, epoch: int, marker: str, signal: str = "SIGKILL", batch: int = 0):
        self.epoch, self.batch, self.marker, self.signal = epoch, batch, Path(marker), signal

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), getattr(signal, self.signal))
