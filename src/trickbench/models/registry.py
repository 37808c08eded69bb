"""Models found by name: @register_model on a builder(in_shape, num_classes, kit, **options)."""

import inspect
import warnings
from typing import Callable

import torch
from omegaconf import OmegaConf
from torch import nn

from trickbench.data.registry import DATASETS
from trickbench.errors import ConfigError, is_int
from trickbench.models import transfer
from trickbench.models.blocks import LayerKit
from trickbench.nn import init_weights, make_activation, make_norm_spec
from trickbench.rules import NodeCheck, Rule, boolean, fraction

MODELS: dict[str, Callable[..., nn.Module]] = {}


def _int_list(v, empty_ok: bool) -> bool:
    return isinstance(v, list | tuple) and (empty_ok or len(v) > 0) and all(is_int(w) and w >= 1 for w in v)


def int_list(empty_ok: bool = False) -> Callable:
    """A list of integers >= 1 (layer widths, blocks per stage); empty only where empty_ok."""
    return lambda v: _int_list(list(v) if OmegaConf.is_list(v) else v, empty_ok)


def _built_on_meta(model_cfg, cfg) -> None:
    """Every check the builders make (a model's own options, norm, activation, init and how they combine) runs here,
    before any data is read: the net is built on the meta device, which allocates nothing."""
    shape = DATASETS[cfg.data.name].shape if "data" in cfg and cfg.data.get("name") in DATASETS else (3, 32, 32)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # about tensors that do not exist ("zero-element tensors")
        build_model(model_cfg, cfg.activation, cfg.norm, cfg.init, shape, 10, load_init_from=False, freeze=False)


# options several models share; a model's own options are checked where it is built (plain.py, resnet.py, ...)
RULES = [
    Rule("model.dropout", fraction, "a number in [0, 1)"),
    Rule("model.conv_dropout", fraction, "a number in [0, 1)"),
    Rule("model.skip", boolean, "true or false"),
    NodeCheck("model", _built_on_meta),
]


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    MODELS[fn.__name__] = fn
    return fn


def model_options(name: str) -> list[str]:
    skip = {"in_shape", "num_classes", "kit"}
    return [p for p in inspect.signature(MODELS[name]).parameters if p not in skip]


def build_model(
    model_cfg, activation_cfg, norm_cfg, init_cfg, in_shape, num_classes, load_init_from: bool = True, freeze=None
) -> nn.Module:
    """The network for conf groups model, activation, norm and init, for inputs of in_shape=(C, H, W); then
    model.init_from's matching weights (unless load_init_from=False: a checkpoint's own weights replace them, as in
    eval.py) and model.freeze_backbone (models/transfer.py)."""
    options = dict(model_cfg)
    name = options.pop("name")
    options.pop("channels_last", None)  # a memory format for every model (speed.py), not a builder option
    init_from, frozen = options.pop("init_from", None), options.pop("freeze_backbone", False)  # every model's
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError("model.name", name, f"one of {sorted(MODELS)}")
    allowed = model_options(name)
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(f"model.{key}", value, f"not an option of model={name}; its options: {allowed}")
    kit = LayerKit(make_activation(activation_cfg), make_norm_spec(norm_cfg))
    net = MODELS[name](in_shape=tuple(in_shape), num_classes=num_classes, kit=kit, **options)
    net = init_weights(net, init_cfg["name"])
    return transfer.apply(net, init_from if load_init_from else None, frozen if freeze is None else freeze)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
