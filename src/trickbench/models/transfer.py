"""Transfer learning (model.init_from, model.freeze_backbone): start from the weights of a checkpoint written by
train.py, and train only the head. Every model is a Backbone (blocks.py): its `head` is the classifier (plain
CNN, VGG, LeNet, MLP: hidden FC layers and the last Linear; ResNet: pool and fc; speednet: pool, linear and
scale), everything else (`features`) is the backbone."""

import logging
from pathlib import Path

import torch
from hydra.utils import to_absolute_path
from torch import nn

from trickbench.checkpoints import load_checkpoint
from trickbench.errors import ConfigError
from trickbench.rules import Rule, boolean, existing_file, optional

CHECKPOINT = "an existing .ckpt file written by train.py"
RULES = [
    Rule(
        "model.init_from",
        optional(existing_file),
        f"null or {CHECKPOINT}",
    ),
    Rule("model.freeze_backbone", boolean, "true or false"),
]

log = logging.getLogger(__name__)


def load_matching(net: nn.Module, path: str) -> dict[str, list[str]]:
    """Copies every tensor of the checkpoint's net whose name and shape match one of `net` (weights and norm
    statistics); logs one line saying what was loaded and what was skipped. A file that is not a train.py
    checkpoint, or one sharing no tensor with `net`, is a ConfigError on model.init_from."""
    checkpoint = load_checkpoint(Path(to_absolute_path(path)), key="model.init_from")
    theirs = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    ours = net.state_dict()
    loaded = [k for k, v in theirs.items() if k in ours and ours[k].shape == v.shape]
    report = {
        "loaded": loaded,
        "shape_differs": [k for k in theirs if k in ours and k not in loaded],
        "not_in_checkpoint": [k for k in ours if k not in theirs],
    }
    if not loaded:
        model = checkpoint["hyper_parameters"]["config"]["model"].get("name", "?")
        raise ConfigError(
            "model.init_from", path, f"a checkpoint sharing layers (names and shapes) with this model; it holds {model}"
        )
    net.load_state_dict({k: theirs[k] for k in loaded}, strict=False)
    net.loaded_keys = frozenset(loaded)  # speednet: keeps its loaded whitening filters (init_from_data)
    skipped = [f"{k} {tuple(theirs[k].shape)}->{tuple(ours[k].shape)}" for k in report["shape_differs"]]
    log.info(
        "model.init_from=%s: loaded %d of %d tensors; skipped (shape differs): %s; not in the checkpoint: %s",
        path,
        len(loaded),
        len(ours),
        ", ".join(skipped) or "none",
        ", ".join(report["not_in_checkpoint"]) or "none",
    )
    return report


def _keep_eval(module: nn.Module, args) -> None:
    module.training = False


def freeze_backbone(net: nn.Module) -> None:
    """Trains the head only: the backbone's parameters get no gradient, and its batch norms keep their running
    statistics (eval mode; a pre-forward hook, since Lightning puts the whole module back in train mode at every
    epoch start). Dropout in the backbone still applies."""
    head = getattr(net, "head", None)
    if not isinstance(head, nn.Module):
        raise ConfigError("model.freeze_backbone", True, f"a model with a `head`; {type(net).__name__} has none")
    head_params = {id(p) for p in head.parameters()}
    for p in net.parameters():
        if id(p) not in head_params:
            p.requires_grad_(False)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(module is m for m in head.modules()):
            module.register_forward_pre_hook(_keep_eval)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    log.info("model.freeze_backbone=true: training %d of %d parameters (the head)", trainable, _numel(net))


def _numel(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def apply(net: nn.Module, init_from: str | None, freeze: bool) -> nn.Module:
    if init_from is not None:
        load_matching(net, init_from)
    if freeze:
        freeze_backbone(net)
    return net
