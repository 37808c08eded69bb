"""conf/debug: what Lightning's own switches (overfit_batches, limit_*_batches, profiler, detect_anomaly) lack for
debug=overfit: the same batches every epoch from trickbench's loaders, and a closing line saying whether train
accuracy got to the target."""

import logging
import warnings

import lightning as L

from trickbench.rules import Rule, number

log = logging.getLogger(__name__)
RULES = [Rule("callbacks.overfit_check.target", number(0, 1, open_low=True), "a train accuracy in (0, 1]")]


class OverfitCheck(L.Callback):
    """debug=overfit: every epoch trains on the same trainer.overfit_batches batches (Lightning fixes the order of a
    DataLoader's sampler only; trickbench's loaders draw a new order per epoch, so each epoch is set back to the
    first epoch's), and at the end of fit says whether train accuracy reached `target`."""

    def __init__(self, target: float = 1.0):
        self.target = target
        self.reached: bool | None = None
        self.acc: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning looks for a DataLoader's SequentialSampler, finds none, and says it turns shuffling off; this
        # callback is what keeps the batches fixed
        warnings.filterwarnings("ignore", message="You requested to overfit but enabled")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(0)  # after Lightning's set_epoch(epoch); the loader draws its order at the first batch

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("train/acc")
        if acc is None or not trainer.is_global_zero:
            return
        self.acc, epochs = float(acc), trainer.current_epoch
        self.reached = self.acc > self.target  # as EarlyStopping(mode=max) compares
        batches = trainer.overfit_batches
        if self.reached:
            log.info(
                "debug=overfit: train acc %.4f > %g on %s fixed batches after %d epochs: the model and loss can learn",
                self.acc,
                self.target,
                batches,
                epochs,
            )
        else:
            log.warning(
                "debug=overfit: train acc %.4f <= %g on %s fixed batches after %d epochs (trainer.max_epochs): "
                "try another optimizer.lr (tune=lr_find), less regularization (model.dropout, "
                "optimizer.weight_decay), or check the labels and the loss",
                self.acc,
                self.target,
                batches,
                epochs,
            )
