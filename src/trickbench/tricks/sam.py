"""Sharpness-aware minimization (Foret et al. 2021), trick=sam (step.sam.rho). Each optimizer step takes two
forward/backward passes over the same batch:

    g = grad L(w),   e = rho * g / ||g||,   w <- optimizer step from w with the gradient grad L(w + e)

||g|| is the norm over every parameter's gradient together. The optimizer (SGD, Adam, ...) is the configured one:
SAM only changes which gradient it steps with. The second pass runs inside Lightning's optimizer step (a closure),
so gradient clipping, precision and DDP's gradient all-reduce apply to it as to any step; it does not count in the
training loss and accuracy. rho 0.05 is the paper's CIFAR-10 value."""

from collections.abc import Callable

import lightning as L
import torch
from torch.optim import Optimizer

from trickbench.rules import Relation, Rule, positive
from trickbench.tricks.base import StepTrick

RULES = [
    Rule("step.sam.rho", positive, "a number > 0 (the radius of the weight perturbation)"),
    Relation(
        "step.sam.rho",
        lambda v, cfg: cfg.trainer.get("accumulate_grad_batches", 1) == 1,
        lambda cfg: (
            "trainer.accumulate_grad_batches=1: the second pass needs the step's own gradient, not a sum "
            f"over {cfg.trainer.accumulate_grad_batches} batches"
        ),
    ),
    Relation(
        "step.sam.rho",
        lambda v, cfg: cfg.trainer.get("precision") not in ("16-mixed", "16", 16),
        lambda cfg: f"a precision without a gradient scaler (trainer.precision={cfg.trainer.precision} steps once)",
    ),
]


class SAM(StepTrick):
    def __init__(self, rho: float = 0.05):
        self.rho = rho

    def wrap_closure(
        self, module: L.LightningModule, optimizer: Optimizer, closure: Callable[[], torch.Tensor]
    ) -> Callable[[], torch.Tensor]:
        def sharpness_aware() -> torch.Tensor:
            loss = closure()  # gradient at w
            if module.trainer.fit_loop._skip_backward:  # trick=swa's BatchNorm pass: no gradients, no second pass
                return loss
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if not params:
                return loss
            grads = [p.grad for p in params]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            perturbation = torch._foreach_mul(grads, self.rho / (norm + 1e-12))
            with torch.no_grad():
                torch._foreach_add_(params, perturbation)
            with module.repeated_pass():
                closure()  # gradient at w + e (zeroed first by Lightning)
            with torch.no_grad():
                torch._foreach_sub_(params, perturbation)
            return loss

        return sharpness_aware
