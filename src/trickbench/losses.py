"""Losses beyond torch.nn's (conf/loss builds the cross entropy): knowledge distillation from a teacher
checkpoint (conf/trick/distill.yaml sets distill.teacher_ckpt, distill.T, distill.alpha)."""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trickbench.checkpoints import load_checkpoint
from trickbench.data import DATASETS
from trickbench.errors import ConfigError, is_number
from trickbench.models import build_model

TEACHER_HINT = "a .ckpt file written by train.py: trick=distill distill.teacher_ckpt=PATH"


@dataclass(frozen=True)
class Distillation:
    """Hinton et al. 2015, with the hard-label loss weighted by 1 - alpha:

        loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * hard_loss

    s, t: student and teacher logits; KL is summed over classes and averaged over the batch; T^2 keeps the
    soft term's gradients at the scale of the hard term's as T grows. Bag of Tricks (He et al. 2019, eq. 5)
    uses CE(y, s) + T^2 * CE(softmax(t / T), softmax(s / T)), which is twice this loss at alpha = 0.5 up to
    the teacher's entropy (a constant for the student)."""

    teacher_ckpt: str
    T: float
    alpha: float

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, hard_loss: torch.Tensor):
        log_p_student = F.log_softmax(student_logits / self.T, dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits / self.T, dim=-1)
        soft = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
        return self.alpha * self.T**2 * soft + (1 - self.alpha) * hard_loss


def distillation(cfg: DictConfig | None) -> Distillation | None:
    """The config's distill node; None (off) when there is none or it is empty. A node without a teacher
    (trick=distill alone) is an error, not a silent run without distillation."""
    if not cfg:
        return None
    if OmegaConf.is_missing(cfg, "teacher_ckpt") or cfg.get("teacher_ckpt") is None:
        raise ConfigError("distill.teacher_ckpt", cfg.get("teacher_ckpt"), TEACHER_HINT)
    T, alpha = cfg.get("T"), cfg.get("alpha")
    if not is_number(T) or T <= 0:
        raise ConfigError("distill.T", T, "a number > 0 (the softmax temperature)")
    if not is_number(alpha) or not 0 <= alpha <= 1:
        raise ConfigError("distill.alpha", alpha, "a number in [0, 1] (the soft targets' weight)")
    return Distillation(str(cfg.teacher_ckpt), float(T), float(alpha))


def load_teacher(path: str, data_cfg: DictConfig, num_classes: int) -> nn.Module:
    """The network stored in a train.py checkpoint, rebuilt from its own config, frozen and in eval mode.
    data_cfg and num_classes are the student's: the teacher must see the same kind of inputs."""
    file = Path(to_absolute_path(path))
    if not file.is_file():
        raise ConfigError("distill.teacher_ckpt", path, TEACHER_HINT)
    checkpoint = load_checkpoint(file, key="distill.teacher_ckpt")
    stored = checkpoint["hyper_parameters"]
    cfg = OmegaConf.create(stored["config"])
    if stored["num_classes"] != num_classes:
        raise ConfigError(
            "distill.teacher_ckpt", path, f"a teacher with {num_classes} classes; it has {stored['num_classes']}"
        )
    if cfg.data.normalize != data_cfg.normalize:
        raise ConfigError(
            "distill.teacher_ckpt",
            path,
            f"a teacher trained with data.normalize={data_cfg.normalize}; it used {cfg.data.normalize}",
        )
    teacher_shape, student_shape = DATASETS[cfg.data.name].shape, DATASETS[data_cfg.name].shape
    if teacher_shape != student_shape:
        raise ConfigError(
            "distill.teacher_ckpt", path, f"a teacher trained on {student_shape} images; it saw {teacher_shape}"
        )
    teacher = build_model(
        cfg.model, cfg.activation, cfg.norm, cfg.init, teacher_shape, num_classes, load_init_from=False
    )
    net_state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    teacher.load_state_dict(net_state)
    return teacher.requires_grad_(False).eval()
