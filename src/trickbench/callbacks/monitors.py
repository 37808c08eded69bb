"""Monitors of a run (conf/callbacks): divergence, the first loss, gradient norms, and the SIGTERM checkpoint.
None of them waits for the device at every step: their checks read values back only in the batches checked_batch
names (the run's first, then every trainer.log_every_n_steps), in an epoch's last batch, or at epoch boundaries."""

import logging
import math
import signal
import threading
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from trickbench.errors import Diverged
from trickbench.rules import Relation, Rule, number, optional, positive, text

RULES = [
    Rule("callbacks.first_loss.factor", number(1, open_low=True), "a number > 1 (how far from ln(classes))"),
    Rule(
        "callbacks.divergence.growth",
        optional(number(1, open_low=True)),
        "null (NaN/inf only) or a number > 1 (stop above it x the first loss and x ln(classes))",
    ),
    Rule("callbacks.gradient_norms.ratio", positive, "a number > 0 (a layer's gradient / weight norm to warn below)"),
    *[Rule(f"callbacks.{k}.dirpath", text, "a folder") for k in ("checkpoint_on_sigterm", "requeue_at_time_limit")],
    # the hints' values interpolate keys checked by their own rules; as Relations they are checked after every Rule,
    # so a bad optimizer.lr is named as optimizer.lr, and a hint set by hand is checked here
    *[
        Relation(f"callbacks.{key}", lambda v, cfg, ok=ok: ok(v), lambda cfg, what=what: what)
        for key, ok, what in (
            ("divergence.lr", positive, "a number > 0 (optimizer.lr)"),
            ("divergence.normalize", text, "a name (data.normalize)"),
            ("divergence.norm", text, "a name (norm.name)"),
            ("first_loss.init", text, "a name (init.name)"),
            ("first_loss.norm", text, "a name (norm.name)"),
            ("first_loss.normalize", text, "a name (data.normalize)"),
            ("first_loss.init_from", text, "null or a checkpoint (model.init_from)"),
        )
    ],
]

log = logging.getLogger(__name__)


def checked_batch(trainer: L.Trainer, stepped: bool) -> bool:
    """Whether checks read values back in this training batch: the run's first (a bad init or lr shows at once)
    and those whose step logs reach the loggers (Lightning's rule: the steps done before it, plus one, a multiple
    of log_every_n_steps). stepped: asked after the batch's optimizer step."""
    before, n = trainer.global_step - int(stepped), trainer.log_every_n_steps
    return before == 0 or (n > 0 and (before + 1) % n == 0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DivergenceGuard(L.Callback):
    """Stops the run when the training loss is NaN/inf, or above growth x both its first checked value and
    ln(classes): Adam at a huge lr blows the loss up to 1e27 and on, never NaN, while a loss that starts large and
    stays there is left alone. Written by hand: EarlyStopping(check_finite) looks only at a monitored metric at
    epoch end and names no step. Checked in the first batch, every log_every_n_steps and in each epoch's last batch
    (a host sync then, not every step); under DDP the ranks agree before raising, so all stop together. The first
    loss is kept in checkpoints, so a resumed run keeps its limit. lr, normalize, norm: the run's optimizer.lr,
    data.normalize and norm.name (interpolated in conf/callbacks/divergence.yaml), for the error's likely causes;
    null: not known. growth: callbacks.divergence.growth; null: NaN/inf only."""

    def __init__(self, lr: float | None = None, normalize: str | None = None, norm: str | None = None, growth=100.0):
        self.lr, self.normalize, self.norm, self.growth = lr, normalize, norm, growth
        self.first_loss: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        if checked_batch(trainer, stepped=True) or batch_idx + 1 >= trainer.num_training_batches:
            self._check(trainer, outputs["loss"] if isinstance(outputs, dict) else outputs)

    def _check(self, trainer: L.Trainer, loss) -> None:
        loss, limit, floor = None if loss is None else loss.detach(), math.inf, ""
        if self.growth is not None and self.first_loss is not None:  # the first check: the loss is its own start
            floor = f"max(first loss {self.first_loss:.3g}, ln({trainer.datamodule.num_classes} classes))"
            limit = self.growth * max(self.first_loss, math.log(trainer.datamodule.num_classes))
        bad = loss is not None and bool((~torch.isfinite(loss) | (loss > limit)).any())  # the one host sync
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            value = float(loss) if bad else "non-finite or too large on another rank"
            grown = bad and math.isfinite(value)
            above = f"above {self.growth:g} x {floor} = {limit:.3g} (callbacks.divergence.growth)" if grown else ""
            raise Diverged(trainer.global_step, trainer.current_epoch, value, self.causes(), above)
        if self.first_loss is None and loss is not None:
            self.first_loss = float(loss)  # read once, right after the sync above

    def state_dict(self) -> dict:
        return {"first_loss": self.first_loss}

    def load_state_dict(self, state_dict: dict) -> None:
        self.first_loss = state_dict.get("first_loss")

    def causes(self) -> str:
        causes = ["lr too high" + ("" if self.lr is None else f" (optimizer.lr={self.lr})")]
        if self.normalize == "none":
            causes.append("inputs not normalized (data.normalize=none)")
        if self.norm == "none":
            causes.append("no normalization layers (norm=none)")
        return ", ".join(causes)


class FirstLossCheck(L.Callback):
    """The lecture's first sanity check: an untrained classifier predicts about uniformly, so its first batch's loss
    should be about ln(number of classes). Outside [ln(C) / factor, factor x ln(C)] it logs one warning naming the
    likely cause. Reads the loss once, in the run's first batch (a checked batch: no extra host sync). Not checked:
    a resumed run, a step trick that changes the loss (distillation: not a plain cross entropy) and init_from
    (loaded weights need not start at ln(C)). init, norm, normalize, init_from: the run's init.name, norm.name,
    data.normalize and model.init_from (interpolated in conf/callbacks/first_loss.yaml), for the warning's causes.
    Written by hand: Lightning has no such check."""

    def __init__(
        self,
        factor: float = 2.0,
        init: str | None = None,
        norm: str | None = None,
        normalize: str | None = None,
        init_from: str | None = None,
    ):
        self.factor = factor
        self.init, self.norm, self.normalize, self.init_from = init, norm, normalize, init_from
        self.first_loss: float | None = None  # the value read, for tests and users' scripts

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        if batch_idx != 0 or trainer.current_epoch != 0 or trainer.global_step > 1 or self.first_loss is not None:
            return  # the run's first batch only (global_step is 1 after its step, 0 when gradients accumulate)
        changes_loss = any(t.changes("loss") for t in getattr(pl_module, "step_tricks", ()))
        if not trainer.is_global_zero or changes_loss or self.init_from:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.first_loss = float(loss.detach())
        classes = trainer.datamodule.num_classes
        ratio = self.first_loss / math.log(classes)
        if math.isfinite(ratio) and not 1 / self.factor <= ratio <= self.factor:  # NaN/inf: DivergenceGuard's
            log.warning(
                "first loss %.3g is %.2g x ln(%d classes) = %.3g (expected within %g x): %s",
                self.first_loss,
                ratio,
                classes,
                math.log(classes),
                self.factor,
                self.causes() if ratio > 1 else _LABEL_BUG,
            )

    def causes(self) -> str:
        """Why logits start far from uniform: the init scale, then unnormalized inputs."""
        causes = [f"logits too large at init: init scale (init={self.init}, norm={self.norm}; try trick=batchnorm)"]
        if self.normalize == "none":
            causes.append("inputs not normalized (data.normalize=none; try trick=standardize)")
        return "; ".join(causes)


_LABEL_BUG = (
    "the net predicts the labels before any training; likely a label bug (labels leaking into the inputs, "
    "the same images in train and val/test)"
)


class CheckpointOnSigterm(L.Callback):
    """SIGTERM (SLURM's time limit, `kill`) or Ctrl-C (SIGINT) while training: Lightning stops after the current
    batch; save last.ckpt first so a requeued or resumed run loses no completed batch. Ctrl-C is taken through
    Lightning's SIGTERM path: its KeyboardInterrupt could land inside an optimizer step, and a checkpoint saved then
    would hold half-updated weights. A second Ctrl-C interrupts at once."""

    stopped_by: str | None = None  # what stopped the last fit: "SIGTERM" or "Ctrl-C" (train.main_task says it)

    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"
        self._previous = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        CheckpointOnSigterm.stopped_by = None  # a parallel launcher's worker runs job after job
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, partial(self._ctrl_c, trainer))

    def _ctrl_c(self, trainer: L.Trainer, signum, frame) -> None:
        CheckpointOnSigterm.stopped_by = "Ctrl-C"
        trainer._signal_connector.received_sigterm = True  # what its SIGTERM handler sets: it stops after the batch
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.stage == "train":
            trainer.save_checkpoint(self.path)
            what = CheckpointOnSigterm.stopped_by or "SIGTERM"
            rank_zero_info(f"{what}: saved {self.path}; continue with resume={self.path.parent.parent}")


class GradientNorms(L.Callback):
    """Per-layer gradient L2 norms (conv/linear weights) every log_every_n_steps, to TensorBoard as
    grad_norm/<layer>, and the first and last layer's in metrics.csv. Warns once when the first layer's norm is
    below `ratio` of the last layer's: the lecture's "network does not learn" case (vanishing gradients)."""

    def __init__(self, ratio: float = 1e-3):
        self.ratio = ratio
        self.warned = False

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if not checked_batch(trainer, stepped=False):
            return
        step = trainer.global_step
        weights = [(n, p) for n, p in pl_module.named_parameters() if p.ndim > 1 and p.grad is not None]
        if not weights:
            return
        norms = torch.stack(torch._foreach_norm([p.grad.detach() for _, p in weights])).float()  # one fused kernel
        pl_module.log_dict({f"grad_norm/{n}": v for (n, _), v in zip(weights, norms, strict=True)}, on_step=True)
        first, last = norms[0], norms[-1]
        # sync_dist at the epoch's end only: DDP's averaged gradients make the norms equal on every rank anyway
        epoch_norms = {"train/grad_norm_first": first, "train/grad_norm_last": last}
        pl_module.log_dict(epoch_norms, on_step=False, on_epoch=True, sync_dist=True)
        if not self.warned and bool(first < self.ratio * last):  # one host sync per logging interval
            self.warned = True
            rank_zero_warn(
                f"vanishing gradients at step {step}: the first layer's gradient norm ({float(first):.2e}) is below "
                f"{self.ratio:g} x the last layer's ({float(last):.2e}); the network may not learn "
                "(try trick=he_init, trick=batchnorm, activation=relu, trick=skip)"
            )
