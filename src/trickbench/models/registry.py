"""Models found by name: @register_model on a builder(in_shape, num_classes, kit, **options)."""

import inspect
import warnings
from typing import Callable

import torch
from omegaconf import OmegaConf
from torch import nn

from trickbench.data.registry import DATASETS
from trickbench.errors import ConfigError, first_line, is_int
from trickbench.models import transfer
from trickbench.models.blocks import LayerKit
from trickbench.nn import init_weights, make_activation, make_norm_spec
from trickbench.rules import NodeCheck, Rule, boolean, fraction

MODELS: dict[str, Callable[..., nn.Module]] = {}
# the most channels (or units) of one layer, and of repeated blocks: far past any net here; 10**12 overflows torch's
# tensor sizes, even on the meta device
WIDEST, DEEPEST = 2**16, 256


def _int_list(v, empty_ok: bool, high: int) -> bool:
    return isinstance(v, list | tuple) and (empty_ok or len(v) > 0) and all(is_int(w) and 1 <= w <= high for w in v)


def int_list(empty_ok: bool = False, high: int = WIDEST) -> Callable:
    """A list of integers in [1, high] (layer widths, blocks per stage); empty only where empty_ok."""
    return lambda v: _int_list(list(v) if OmegaConf.is_list(v) else v, empty_ok, high)


def input_shape(cfg) -> tuple[int, int, int]:
    """(C, H, W) of data.name's images; CIFAR's when the config names no known dataset (its rule says so)."""
    return DATASETS[cfg.data.name].shape if "data" in cfg and cfg.data.get("name") in DATASETS else (3, 32, 32)


def _built_on_meta(model_cfg, cfg) -> None:
    """Every check the builders make (a model's own options, norm, activation, init and how they combine) runs here,
    before any data is read: the net is built on the meta device, which allocates nothing."""
    shape = input_shape(cfg)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # about tensors that do not exist ("zero-element tensors")
        try:
            build_model(model_cfg, cfg.activation, cfg.norm, cfg.init, shape, 10, load_init_from=False, freeze=False)
        except (RuntimeError, ValueError, TypeError, OverflowError) as e:
            if isinstance(e, ConfigError):
                raise
            # torch's shape checks: a kernel larger than the map, too many poolings, a size past int64
            raise ConfigError("model.name", model_cfg.get("name"), f"a net for {shape} inputs: {first_line(e)}") from e


# options several models share; a model's own options are checked where it is built (plain.py, resnet.py, ...)
RULES = [
    Rule("model.dropout", fraction, "a number in [0, 1)"),
    Rule("model.conv_dropout", fraction, "a number in [0, 1)"),
    Rule("model.skip", boolean, "true or false"),
    NodeCheck("model", _built_on_meta, whole=True),  # build_model refuses an option its model lacks
]


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """model.name=<fn's name> builds with fn. A second model of the same name is refused (timm's registry warns; a
    silent overwrite would train another net than the yaml names); the same function again (a reload) is not."""
    known = MODELS.get(fn.__name__)
    if known is not None and (known.__module__, known.__qualname__) != (fn.__module__, fn.__qualname__):
        raise ValueError(
            f"model name {fn.__name__!r} is registered twice: by {known.__module__} and by {fn.__module__}; "
            "give one of them another name"
        )
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
