"""A distillation teacher (tricks/distill.py): the network of a train.py checkpoint, rebuilt from its own config,
frozen and in eval mode, checked against the student's data."""

from pathlib import Path

from hydra.utils import to_absolute_path
from omegaconf import OmegaConf
from torch import nn

from trickbench.checkpoints import load_checkpoint
from trickbench.errors import ConfigError
from trickbench.models.registry import build_model

KEY = "distill.teacher_ckpt"


def load_teacher(path: str, normalize: str, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """normalize, shape, num_classes: the student's; the teacher must have seen the same kind of inputs."""
    file = Path(to_absolute_path(path))
    checkpoint = load_checkpoint(file, key=KEY)
    stored = checkpoint["hyper_parameters"]
    cfg = OmegaConf.create(stored["config"])
    if stored["num_classes"] != num_classes:
        raise ConfigError(KEY, path, f"a teacher with {num_classes} classes; it has {stored['num_classes']}")
    if cfg.data.normalize != normalize:
        raise ConfigError(KEY, path, f"a teacher trained with data.normalize={normalize}; it used {cfg.data.normalize}")
    teacher_shape = tuple(stored.get("input_shape") or ())
    if teacher_shape and teacher_shape != tuple(shape):
        raise ConfigError(KEY, path, f"a teacher trained on {tuple(shape)} images; it saw {teacher_shape}")
    teacher = build_model(
        cfg.model, cfg.activation, cfg.norm, cfg.init, tuple(shape), num_classes, load_init_from=False
    )
    net_state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    teacher.load_state_dict(net_state)
    return teacher.requires_grad_(False).eval()
