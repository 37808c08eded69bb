"""Clocks for results.json: seconds per epoch and images per second (EpochTimer), and the first compiled batch
(CompileClock). Each reads the clock after a device synchronize, at epoch boundaries or once: never every step."""

import time

import lightning as L

from trickbench.callbacks.monitors import synchronize


class EpochTimer(L.Callback):
    """Seconds per epoch (training, validation, and the whole epoch with checkpoints) and training images per
    second, for results.json. Reads the clock after a device synchronize at epoch boundaries only."""

    def __init__(self):
        self.train_s: list[float] = []
        self.val_s: list[float] = []
        self.epoch_s: list[float] = []
        self.train_images = 0
        self._epoch_start = self._train_end = self._val_start = None

    def _now(self, pl_module: L.LightningModule) -> float:
        synchronize(pl_module.device)
        return time.perf_counter()

    def _close_epoch(self, pl_module: L.LightningModule) -> None:
        if self._epoch_start is not None:
            self.epoch_s.append(self._now(pl_module) - self._epoch_start)
            self._epoch_start = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_epoch(pl_module)
        self._epoch_start, self._train_end = self._now(pl_module), None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.train_images += len(batch[1])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._epoch_start is None:
            return
        self._val_start = self._now(pl_module)
        if self._train_end is None:
            self._train_end = self._val_start
            self.train_s.append(self._train_end - self._epoch_start)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_start is not None:
            self.val_s.append(self._now(pl_module) - self._val_start)
            self._val_start = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._train_end is None and self._epoch_start is not None:  # an epoch without validation
            self._train_end = self._now(pl_module)
            self.train_s.append(self._train_end - self._epoch_start)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_epoch(pl_module)

    def summary(self) -> dict:
        train = sum(self.train_s)
        return {
            "train_s": round(train, 3),
            "val_s": round(sum(self.val_s), 3),
            "epoch_s": [round(t, 3) for t in self.epoch_s],
            "train_images_per_s": round(self.train_images / train, 1) if train > 0 else None,
        }


class CompileClock(L.Callback):
    """Seconds of the run's first training batch, where torch.compile traces and compiles (one synchronize)."""

    def __init__(self):
        self.first_batch_s: float | None = None
        self._start: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.first_batch_s is None and self._start is None:
            synchronize(pl_module.device)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.first_batch_s is None and self._start is not None:
            synchronize(pl_module.device)
            self.first_batch_s = round(time.perf_counter() - self._start, 3)
