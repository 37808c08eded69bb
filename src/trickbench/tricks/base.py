"""The training step's extension point. TrickModule.training_step runs, for each trick in conf `step:` order:

    x, targets = trick.batch(x, targets)            before the forward pass (mixup/CutMix: mixed images, soft targets)
    loss = trick.loss(x, logits, loss)              after conf/loss (distillation adds the teacher's term)
    closure = trick.wrap_closure(module, opt, closure)  around the optimizer step's forward + backward (SAM)

and, being a Lightning callback, a trick has every Lightning hook too (setup, on_fit_start, checkpoint state, ...).
Lightning's own mechanisms stay Lightning's: gradient clipping (trainer.gradient_clip_val), weight averaging
(callbacks), precision and DDP all see the step as usual, because wrap_closure runs inside Lightning's optimizer step
(LightningModule.optimizer_step) rather than replacing it with manual optimization."""

from collections.abc import Callable

import lightning as L
import torch
from torch.optim import Optimizer


class StepTrick(L.Callback):
    def batch(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch the net sees and what the loss compares its logits to; default: unchanged."""
        return x, targets

    def loss(self, x: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """The training loss to minimize, given the batch's images, its logits and the loss so far; default: as is."""
        return loss

    def wrap_closure(
        self, module: L.LightningModule, optimizer: Optimizer, closure: Callable[[], torch.Tensor]
    ) -> Callable[[], torch.Tensor]:
        """What the optimizer step calls: closure() runs the training step's forward and backward at the current
        weights and returns the loss; module.repeated_pass() marks an extra pass that must not count in the metrics.
        Default: the closure itself."""
        return closure

    @classmethod
    def changes(cls, hook: str) -> bool:
        """Whether this trick overrides one of the three step hooks above (e.g. FirstLossCheck skips runs whose loss
        is not the plain conf/loss)."""
        return getattr(cls, hook) is not getattr(StepTrick, hook)
