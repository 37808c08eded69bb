import math

from torch import nn

from trickbench.errors import ConfigError
from trickbench.models.blocks import Backbone, Head, LayerKit
from trickbench.models.registry import WIDEST, int_list, register_model
from trickbench.rules import Rule

RULES = [
    Rule("model.hidden", int_list(empty_ok=True), f"a list of integers in [1, {WIDEST}], the hidden widths ([]: none)")
]


@register_model
def mlp(in_shape, num_classes, kit: LayerKit, hidden=(512, 256), skip=False, dropout=0.0):
    if kit.norm.fc is None:
        raise ConfigError(
            "norm.name", kit.norm.name, "model=mlp has no feature maps; allowed: none, batch, layer, group"
        )
    return Backbone(nn.Identity(), Head(math.prod(in_shape), hidden, num_classes, kit, "flatten", dropout, skip))
