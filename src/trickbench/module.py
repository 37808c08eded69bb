"""The LightningModule: a backbone from models/, a loss from conf/loss, torchmetrics accuracy, and the
optimizer/scheduler from optim.py. Batches arrive augmented and normalized (data/augment.py)."""

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from trickbench.optim import build_optimizer, build_scheduler


class TrickModule(L.LightningModule):
    def __init__(self, net: nn.Module, config: dict, num_classes: int):
        """config: the run's whole resolved config (stored in checkpoints, so eval.py can rebuild the run)."""
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.cfg = OmegaConf.create(config)
        self.loss_fn = instantiate(self.cfg.loss)
        self.acc = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro") for s in ("train", "val", "test")}
        )
        self.train_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = self.loss_fn(logits, y)
        self.acc[f"{stage}_acc"](logits, y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(y))
        self.log(
            f"{stage}/acc", self.acc[f"{stage}_acc"], on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y)
        )
        return loss

    def training_step(self, batch, batch_idx):
        self.train_images += len(batch[1])
        return self._step(batch, "train")

    def on_train_epoch_end(self):
        # per-step lr curves come from LearningRateMonitor; this is the epoch's value for metrics.csv
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        # images per optimizer step, for optimizer.scale_lr_to_batch
        global_batch = self.cfg.data.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches
        optimizer = build_optimizer(self, self.cfg.optimizer, global_batch)
        scheduler = build_scheduler(
            optimizer, self.cfg.scheduler, int(self.trainer.estimated_stepping_batches), self.trainer.max_epochs
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer
