"""Lightning callbacks of conf/callbacks that Lightning does not ship."""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from trickbench.errors import Diverged


class DivergenceGuard(L.Callback):
    """Stops the run when the training loss is NaN/inf. Written by hand: EarlyStopping(check_finite) looks only
    at a monitored metric at epoch end and names no step. Checked every log_every_n_steps (a host sync then, not
    every step); under DDP the ranks agree before raising, so all stop together."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        step = trainer.global_step
        if step != 1 and step % max(trainer.log_every_n_steps, 1) != 0:
            return
        self._check(trainer, pl_module, outputs["loss"] if isinstance(outputs, dict) else outputs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule):
        # the epoch's mean loss, already synced across ranks by self.log: catches runs shorter than the interval
        self._check(trainer, pl_module, trainer.callback_metrics.get("train/loss"))

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule, loss) -> None:
        bad = loss is not None and not bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            value = float(loss.detach()) if bad else "non-finite on another rank"
            raise Diverged(trainer.global_step, trainer.current_epoch, value, _causes(getattr(pl_module, "cfg", None)))


def _causes(cfg) -> str:
    if cfg is None:
        return "lr too high, no input normalization"
    causes = [f"lr too high (optimizer.lr={cfg.optimizer.lr})"]
    if cfg.data.get("normalize", "none") == "none":
        causes.append("inputs not normalized (data.normalize=none)")
    if not cfg.norm.get("name") or cfg.norm.get("name") == "none":
        causes.append("no normalization layers (norm=none)")
    return ", ".join(causes)


class CheckpointOnSigterm(L.Callback):
    """SIGTERM (SLURM's time limit, `kill`): Lightning stops after the current batch; save last.ckpt first so a
    requeued or resumed run loses no completed epoch."""

    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.stage == "train":
            trainer.save_checkpoint(self.path)
            rank_zero_info(f"SIGTERM: saved {self.path}; continue with resume={self.path.parent.parent}")


class GradientNorms(L.Callback):
    """Per-layer gradient L2 norms (conv/linear weights) every log_every_n_steps, to TensorBoard as
    grad_norm/<layer>, and the first and last layer's in metrics.csv. Warns once when the first layer's norm is
    below `ratio` of the last layer's: the lecture's "network does not learn" case (vanishing gradients)."""

    def __init__(self, ratio: float = 1e-3):
        self.ratio = ratio
        self.warned = False

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        step = trainer.global_step
        if step % max(trainer.log_every_n_steps, 1) != 0:
            return
        weights = [(n, p) for n, p in pl_module.named_parameters() if p.ndim > 1 and p.grad is not None]
        if not weights:
            return
        norms = torch.stack([p.grad.detach().norm() for _, p in weights]).float()
        pl_module.log_dict({f"grad_norm/{n}": v for (n, _), v in zip(weights, norms, strict=True)}, on_step=True)
        first, last = norms[0], norms[-1]
        pl_module.log_dict({"train/grad_norm_first": first, "train/grad_norm_last": last}, on_step=False, on_epoch=True)
        if not self.warned and bool(first < self.ratio * last):  # one host sync per logging interval
            self.warned = True
            rank_zero_warn(
                f"vanishing gradients at step {step}: the first layer's gradient norm ({float(first):.2e}) is below "
                f"{self.ratio:g} x the last layer's ({float(last):.2e}); the network may not learn "
                "(try trick=he_init, trick=batchnorm, activation=relu, trick=skip)"
            )
