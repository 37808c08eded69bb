"""Activation factory: conf/activation/<name>.yaml -> a zero-argument constructor of an nn.Module."""

import inspect
from functools import partial
from typing import Callable

from torch import nn

from trickbench.errors import ConfigError
from trickbench.rules import NodeCheck, Rule, number, one_of

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}

NAME = Rule("activation.name", one_of(ACTIVATIONS), f"one of {sorted(ACTIVATIONS)}")


def _takes(node, cfg=None) -> None:
    """A keyword the activation's class lacks, named with those it takes (torch's TypeError names neither)."""
    NAME.check(node.get("name"))
    takes = [p for p in inspect.signature(ACTIVATIONS[node["name"]]).parameters if p != "inplace"]
    for key in node:
        if key != "name" and key not in takes:
            allowed = f"activation={node['name']} takes {', '.join(takes) if takes else 'no option'}"
            raise ConfigError(f"activation.{key}", node[key], allowed)


RULES = [
    NAME,
    Rule("activation.alpha", number(), "a number (ELU's value for large negative inputs)"),
    Rule("activation.negative_slope", number(), "a number (the slope below 0)"),
    NodeCheck("activation", _takes, whole=True),
]


def make_activation(cfg) -> Callable[[], nn.Module]:
    """cfg: {name, **constructor kwargs}, e.g. {name: leaky_relu, negative_slope: 0.01}."""
    _takes(cfg)
    kwargs = dict(cfg)
    return partial(ACTIVATIONS[kwargs.pop("name")], **kwargs)
