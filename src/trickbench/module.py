"""The LightningModule: a backbone from models/, a loss from conf/loss (plus distillation from a frozen
teacher, losses.py), torchmetrics accuracy, and the optimizer/scheduler from optim.py. Batches arrive
augmented and normalized (data/augment.py); mixup/CutMix training batches add soft targets."""

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import OmegaConf
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from trickbench.data import DATASETS
from trickbench.data.batch_ops import tta_logits
from trickbench.losses import distillation, load_teacher
from trickbench.optim import build_optimizer, build_scheduler


class TrickModule(L.LightningModule):
    def __init__(self, net: nn.Module, config: dict, num_classes: int):
        """config: the run's whole resolved config (stored in checkpoints, so eval.py can rebuild the run)."""
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.cfg = OmegaConf.create(config)
        self.loss_fn = instantiate(self.cfg.loss)
        self.distill = distillation(self.cfg.get("distill"))  # None: off
        # in a tuple, not a Module attribute: the teacher stays out of state_dict, parameters() and train()
        self._teacher: tuple[nn.Module, ...] = ()
        # Updated every step, logged once per epoch: Lightning's self.log costs ~2 ms of host time per call (measured
        # on CPU: 7% of a default run's step). validate_args=False and nan_strategy="disable": their checks read
        # values back to the host. The states are not in state_dict: checkpoints hold weights only.
        stages = ("train", "val", "test")
        self.acc = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False) for s in stages}
        )
        self.mean_loss = nn.ModuleDict({f"{s}_loss": MeanMetric(nan_strategy="disable") for s in stages})
        self.tta = (self.cfg.get("augment") or {}).get("tta")
        self.channels_last = bool((self.cfg.get("model") or {}).get("channels_last"))
        # one image as the datamodule serves it (uint8; its on_after_batch_transfer normalizes it): the model summary
        # runs it through the net for each layer's output shape and FLOPs. Not with compile: it would compile the net
        # for a batch of one before training starts.
        name = (self.cfg.get("data") or {}).get("name")
        if name in DATASETS and not self.cfg.get("compile"):
            self.example_input_array = torch.zeros(1, *DATASETS[name].shape, dtype=torch.uint8)
        # the training loss summed on the device since the last logging step: logged as its mean there (TensorBoard's
        # within-epoch curve, train/loss_step), read back only in the batches the loggers write
        self._interval_loss: torch.Tensor | None = None
        self._interval_steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def on_fit_start(self):
        if self.distill is not None and self.teacher is None:  # loaded for training only: eval.py needs no teacher
            teacher = load_teacher(self.distill.teacher_ckpt, self.cfg.data, self.hparams.num_classes)
            self._teacher = (teacher.to(self.device),)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # trick=ema: EMAWeightAveraging.on_load_checkpoint would put the raw weights back when the best checkpoint
        # is loaded for testing; outside fit, the averaged weights (state_dict) are the ones to evaluate
        if "current_model_state" in checkpoint and self.trainer.state.fn != TrainerFn.FITTING:
            checkpoint["current_model_state"] = checkpoint["state_dict"]

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y, *soft_targets = batch  # mixup/CutMix training batches: (x, original labels, soft targets)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.net(x) if stage == "train" else tta_logits(self.net, x, self.tta)
        loss = self.loss_fn(logits, soft_targets[0] if soft_targets else y)
        if stage == "train" and self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            loss = self.distill(logits, teacher_logits, loss)
        self.acc[f"{stage}_acc"].update(logits.detach(), y)
        # the loss once per image: a batch-size weighted mean, without a weight tensor copied from the host
        self.mean_loss[f"{stage}_loss"].update(loss.detach().expand(len(y)))
        return loss

    def _log_epoch(self, stage: str) -> None:
        """The epoch's mean loss and accuracy. Logged as metric objects: Lightning computes them at the epoch's end
        (summing the counts of every DDP rank) and resets them."""
        acc, mean_loss = self.acc[f"{stage}_acc"], self.mean_loss[f"{stage}_loss"]
        if not mean_loss.update_called:  # e.g. an epoch resumed after its last batch
            return
        self.log(f"{stage}/loss", mean_loss)
        self.log(f"{stage}/acc", acc, prog_bar=True)

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        self._log_interval(loss.detach())
        return loss

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

    def on_train_epoch_end(self):
        self._log_epoch("train")
        # per-step lr curves come from LearningRateMonitor; this is the epoch's value for metrics.csv
        # sync_dist: the same value on every rank, but Lightning warns about any unsynced epoch-level value under DDP
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_validation_epoch_end(self):
        self._log_epoch("val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_test_epoch_end(self):
        self._log_epoch("test")

    def configure_optimizers(self):
        # images per optimizer step, for optimizer.scale_lr_to_batch
        global_batch = self.cfg.data.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches
        optimizer = build_optimizer(self, self.cfg.optimizer, global_batch)
        scheduler = build_scheduler(
            optimizer, self.cfg.scheduler, int(self.trainer.estimated_stepping_batches), self.trainer.max_epochs
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer
