"""Weight-init factory: conf/init/<name>.yaml -> applied to every conv and linear weight."""

from functools import partial

import torch
from torch import nn

from trickbench.rules import Rule, one_of

INITS = {
    "default": None,  # keep PyTorch's own init (Kaiming uniform with a=sqrt(5))
    "glorot_uniform": nn.init.xavier_uniform_,
    "glorot_normal": nn.init.xavier_normal_,
    "he_uniform": partial(nn.init.kaiming_uniform_, nonlinearity="relu"),
    "he_normal": partial(nn.init.kaiming_normal_, nonlinearity="relu"),
}
NAME = Rule("init.name", one_of(INITS), f"one of {list(INITS)}")
RULES = [NAME]


@torch.no_grad()
def init_weights(net: nn.Module, name: str) -> nn.Module:
    NAME.check(name)
    fn = INITS[name]
    if fn is None:
        return net
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fn(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net
