"""Models found by name: @register_model on a builder(in_shape, num_classes, kit, **options)."""

import inspect
from typing import Callable

from torch import nn

from trickbench.errors import ConfigError
from trickbench.models import transfer
from trickbench.models.blocks import LayerKit
from trickbench.nn import init_weights, make_activation, make_norm_spec
from trickbench.rules import Rule, fraction

MODELS: dict[str, Callable[..., nn.Module]] = {}
# options several models share; a model's own options are checked where it is built (resnet.py has its own RULES)
RULES = [
    Rule("model.dropout", fraction, "a number in [0, 1)"),
    Rule("model.conv_dropout", fraction, "a number in [0, 1)"),
]


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    MODELS[fn.__name__] = fn
    return fn


def model_options(name: str) -> list[str]:
    skip = {"in_shape", "num_classes", "kit"}
    return [p for p in inspect.signature(MODELS[name]).parameters if p not in skip]


def build_model(
    model_cfg, activation_cfg, norm_cfg, init_cfg, in_shape, num_classes, load_init_from: bool = True
) -> nn.Module:
    """The network for conf groups model, activation, norm and init, for inputs of in_shape=(C, H, W); then
    model.init_from's matching weights (unless load_init_from=False: a checkpoint's own weights replace them, as in
    eval.py) and model.freeze_backbone (models/transfer.py)."""
    options = dict(model_cfg)
    name = options.pop("name")
    options.pop("channels_last", None)  # a memory format for every model (speed.py), not a builder option
    init_from, freeze = options.pop("init_from", None), options.pop("freeze_backbone", False)  # every model's
    if name not in MODELS:
        raise ConfigError("model.name", name, f"one of {sorted(MODELS)}")
    allowed = model_options(name)
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(f"model.{key}", value, f"not an option of model={name}; its options: {allowed}")
    kit = LayerKit(make_activation(activation_cfg), make_norm_spec(norm_cfg))
    net = MODELS[name](in_shape=tuple(in_shape), num_classes=num_classes, kit=kit, **options)
    net = init_weights(net, init_cfg["name"])
    return transfer.apply(net, init_from if load_init_from else None, freeze)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
