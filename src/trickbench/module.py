"""The LightningModule from parts: a backbone, a loss, the optimizer and scheduler factories and the step tricks
(tricks/). TrickModule reads no config: the resolved run config it is given is only stored in checkpoints, for
eval.py and resume=; build_module (below) makes it from a run config, for train.py and eval.py alike. Batches arrive
augmented and normalized (data/augment.py)."""

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from functools import partial

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from trickbench import optim
from trickbench.data import DATASETS
from trickbench.data.batch_ops import tta_logits
from trickbench.tricks import StepTrick

# (module, replicas) -> the optimizer: replicas = devices x accumulated batches, for optimizer.scale_lr_to_batch
OptimizerFactory = Callable[[nn.Module, int], Optimizer]
# (optimizer, total optimizer steps, epochs) -> Lightning's {"scheduler", "interval"}, or None for a constant lr
SchedulerFactory = Callable[[Optimizer, int, int], dict | None]


class TrickModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        loss_fn: nn.Module,
        num_classes: int,
        *,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        step_tricks: Sequence[StepTrick] = (),
        eval_forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
        channels_last: bool = False,
        input_shape: tuple[int, int, int] | None = None,
        example_input: torch.Tensor | None = None,
        config: dict | None = None,
    ):
        """eval_forward(net, x): the logits for validation and test (test-time augmentation); default net(x).
        example_input: one image as the datamodule serves it, for the model summary's shapes and FLOPs.
        config: the run's resolved config, stored in checkpoints (hparams) with num_classes and the input shape."""
        super().__init__()
        hparams = {"config": config, "num_classes": num_classes, "input_shape": input_shape}
        self.save_hyperparameters(hparams, logger=False)
        self.net, self.loss_fn = net, loss_fn
        self.make_optimizer, self.make_scheduler = optimizer, scheduler
        self.step_tricks = list(step_tricks)
        self.eval_forward = eval_forward
        self.channels_last = channels_last
        if example_input is not None:
            self.example_input_array = example_input
        # Updated every step, logged once per epoch: Lightning's self.log costs ~2 ms of host time per call (measured
        # on CPU: 7% of a default run's step). validate_args=False and nan_strategy="disable": their checks read
        # values back to the host. The states are not in state_dict: checkpoints hold weights only.
        stages = ("train", "val", "test", "train_clean")
        self.acc = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False) for s in stages}
        )
        self.mean_loss = nn.ModuleDict({f"{s}_loss": MeanMetric(nan_strategy="disable") for s in stages})
        # the training loss summed on the device since the last logging step: logged as its mean there (TensorBoard's
        # within-epoch curve, train/loss_step), read back only in the batches the loggers write
        self._interval_loss: torch.Tensor | None = None
        self._interval_steps = 0
        self._repeated = False  # inside a step trick's extra pass over the batch (SAM's second)
        self._prepared: tuple | None = None  # the step's batch after the tricks' batch hooks, for that pass
        self._epoch_lr: float | None = None  # the lr of the epoch's first optimizer step: metrics.csv's lr
        self._test_stage = "test"  # what a test pass logs as: test, or train_clean (testing_as)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @contextmanager
    def repeated_pass(self):
        """A step trick's extra training pass over the step's batch: the same (mixed) batch; not counted in the
        training loss and accuracy."""
        self._repeated = True
        try:
            yield
        finally:
            self._repeated = False

    def training_step(self, batch, batch_idx):
        if self._repeated:
            x, targets, y = self._prepared
        else:
            x, y = batch
            x, targets = self._layout(x), y
            for trick in self.step_tricks:
                x, targets = trick.batch(x, targets)
            self._prepared = (x, targets, y)
        logits = self.net(x)
        loss = self.loss_fn(logits, targets)
        for trick in self.step_tricks:
            loss = trick.loss(x, logits, loss)
        if not self._repeated:
            self._count("train", logits, y, loss)
            self._log_interval(loss.detach())
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        for trick in self.step_tricks:
            optimizer_closure = trick.wrap_closure(self, optimizer, optimizer_closure)
        optimizer.step(closure=optimizer_closure)

    def _eval_step(self, batch, stage: str) -> None:
        x, y = batch
        x = self._layout(x)
        logits = self.net(x) if self.eval_forward is None else self.eval_forward(self.net, x)
        self._count(stage, logits, y, self.loss_fn(logits, y))

    def _count(self, stage: str, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        self.acc[f"{stage}_acc"].update(logits.detach(), y)
        # the loss once per image: a batch-size weighted mean, without a weight tensor copied from the host
        self.mean_loss[f"{stage}_loss"].update(loss.detach().expand(len(y)))

    def _log_epoch(self, stage: str) -> None:
        """The epoch's mean loss and accuracy. Logged as metric objects: Lightning computes them at the epoch's end
        (summing the counts of every DDP rank) and resets them."""
        acc, mean_loss = self.acc[f"{stage}_acc"], self.mean_loss[f"{stage}_loss"]
        if not mean_loss.update_called:  # e.g. an epoch resumed after its last batch
            return
        self.log(f"{stage}/loss", mean_loss)
        self.log(f"{stage}/acc", acc, prog_bar=True)

    def _log_interval(self, loss: torch.Tensor) -> None:
        """The mean training loss of each logging interval, logged in the batch whose step logs reach the loggers
        (Lightning's rule; callbacks.checked_batch's batches include them): one self.log per interval, not per step."""
        if self._trainer is None:  # a step called outside a Trainer (as self.log, nothing to log to)
            return
        self._interval_loss = loss.clone() if self._interval_steps == 0 else self._interval_loss + loss
        self._interval_steps += 1
        n = self.trainer.log_every_n_steps
        if n > 0 and (self.trainer.global_step + 1) % n == 0:
            self.log("train/loss_step", self._interval_loss / self._interval_steps, on_step=True, on_epoch=False)
            self._interval_steps = 0

    def on_train_batch_start(self, batch, batch_idx):
        # read before the epoch's first optimizer step: schedulers step after it, and an epoch-interval one at the
        # epoch's end, so the lr read there is the next epoch's. A run resumed mid-epoch keeps its checkpoint's value.
        if batch_idx == 0 or self._epoch_lr is None:
            self._epoch_lr = self.optimizers().param_groups[0]["lr"]

    def on_train_epoch_end(self):
        self._log_epoch("train")
        # per-step lr curves come from LearningRateMonitor; this is the epoch's value for metrics.csv
        # sync_dist: the same value on every rank, but Lightning warns about any unsynced epoch-level value under DDP
        if self._epoch_lr is not None:
            self.log("train/lr", self._epoch_lr, on_step=False, on_epoch=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["epoch_start_lr"] = self._epoch_lr  # a mid-epoch checkpoint (requeue) resumes past that step

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._epoch_lr = checkpoint.get("epoch_start_lr")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._log_epoch("val")

    @contextmanager
    def testing_as(self, stage: str):
        """Test passes log as <stage>/acc and <stage>/loss (train_clean: the training split, from
        data.ImageDataModule.testing_on): TensorBoard and Trainer.test's answer keep them apart from the test's."""
        self._test_stage = stage
        try:
            yield
        finally:
            self._test_stage = "test"

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self._test_stage)

    def on_test_epoch_end(self):
        self._log_epoch(self._test_stage)

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self, self.trainer.world_size * self.trainer.accumulate_grad_batches)
        if self.make_scheduler is None:
            return optimizer
        scheduler = self.make_scheduler(
            optimizer, int(self.trainer.estimated_stepping_batches), self.trainer.max_epochs
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer


def build_module(cfg: DictConfig, net, num_classes: int, step_tricks=()) -> TrickModule:
    """The LightningModule from the run's parts; eval.py builds it the same way, without step tricks."""
    shape = DATASETS[cfg.data.name].shape
    tta = (cfg.get("augment") or {}).get("tta")
    return TrickModule(
        net,
        instantiate(cfg.loss),
        num_classes,
        optimizer=optim.optimizer_factory(cfg.optimizer, cfg.data.batch_size),
        scheduler=optim.scheduler_factory(cfg.scheduler),
        step_tricks=step_tricks,
        eval_forward=None if tta in (None, "none") else partial(tta_logits, mode=tta),
        channels_last=bool(cfg.model.get("channels_last")),
        input_shape=shape,
        # one image as the datamodule serves it (uint8; its on_after_batch_transfer normalizes it): the model summary
        # runs it through the net for each layer's output shape and FLOPs. Not with compile: it would compile the net
        # for a batch of one before training starts.
        example_input=None if cfg.get("compile") else torch.zeros(1, *shape, dtype=torch.uint8),
        config=OmegaConf.to_container(cfg, resolve=True),
    )
