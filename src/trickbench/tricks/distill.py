"""Knowledge distillation (Hinton et al. 2015) from a frozen teacher, a checkpoint written by train.py
(trick=distill distill.teacher_ckpt=PATH; distill.T, distill.alpha):

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * hard_loss

s, t: student and teacher logits; KL is summed over classes and averaged over the batch; T^2 keeps the soft term's
gradients at the scale of the hard term's as T grows. Bag of Tricks (He et al. 2019, eq. 5) uses
CE(y, s) + T^2 * CE(softmax(t / T), softmax(s / T)), which is twice this loss at alpha = 0.5 up to the teacher's
entropy (a constant for the student). The teacher sees the batch the student sees (mixed, with mixup/CutMix)."""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from trickbench.errors import ConfigError
from trickbench.models.teacher import load_teacher
from trickbench.rules import Rule, existing_file, number, optional, positive
from trickbench.tricks.base import StepTrick

TEACHER_HINT = "an existing .ckpt file written by train.py: trick=distill distill.teacher_ckpt=PATH"


RULES = [
    Rule("distill.T", positive, "a number > 0 (the softmax temperature)"),
    Rule("distill.alpha", number(0, 1), "a number in [0, 1] (the soft targets' weight)"),
    # last: the numbers are wrong whatever the file. Null passes here (trick=distill composes alone, as every
    # option does) and is refused when the trick is built, before any data is read.
    Rule("distill.teacher_ckpt", optional(existing_file), f"null or {TEACHER_HINT}"),
]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, hard_loss: torch.Tensor, T: float, alpha: float):
    log_p_student = F.log_softmax(student / T, dim=-1)
    log_p_teacher = F.log_softmax(teacher / T, dim=-1)
    soft = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return alpha * T**2 * soft + (1 - alpha) * hard_loss


class Distill(StepTrick):
    def __init__(self, teacher_ckpt: str, T: float = 20.0, alpha: float = 0.5):
        if teacher_ckpt is None:
            raise ConfigError("distill.teacher_ckpt", None, TEACHER_HINT)
        self.teacher_ckpt, self.T, self.alpha = teacher_ckpt, T, alpha
        self.teacher: nn.Module | None = None  # an attribute of this callback: outside the student's state_dict

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.teacher is None:  # the student's data decides which teachers fit
            dm = trainer.datamodule
            teacher = load_teacher(self.teacher_ckpt, dm.normalize, dm.shape, dm.num_classes)
            self.teacher = teacher.to(pl_module.device)

    def loss(self, x: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return distillation_loss(logits, teacher_logits, loss, self.T, self.alpha)
