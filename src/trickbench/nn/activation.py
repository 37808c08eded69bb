"""Activation factory: conf/activation/<name>.yaml -> a zero-argument constructor of an nn.Module."""

from functools import partial
from typing import Callable

from torch import nn

from trickbench.errors import ConfigError
from trickbench.rules import Rule, number

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}

RULES = [
    Rule("activation.alpha", number(), "a number (ELU's value for large negative inputs)"),
    Rule("activation.negative_slope", number(), "a number (the slope below 0)"),
]


def make_activation(cfg) -> Callable[[], nn.Module]:
    """cfg: {name, **constructor kwargs}, e.g. {name: leaky_relu, negative_slope: 0.01}."""
    kwargs = dict(cfg)
    name = kwargs.pop("name")
    if name not in ACTIVATIONS:
        raise ConfigError("activation.name", name, f"one of {sorted(ACTIVATIONS)}")
    return partial(ACTIVATIONS[name], **kwargs)
