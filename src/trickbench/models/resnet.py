"""ResNets with the CIFAR stem (conv3x3, stride 1, no max-pool), built from basic-block Stages."""

from torch import nn

from trickbench.models.blocks import Backbone, ConvBlock, Head, LayerKit, Stage
from trickbench.models.registry import register_model


def _basic_block(cin, cout, stride, kit, skip):
    convs = [ConvBlock(cin, cout, kit, 3, stride), ConvBlock(cout, cout, kit, 3, act=False)]
    return Stage(convs, cin, cout, kit, stride=stride, skip=skip, post_act=True)


def _resnet(in_shape, num_classes, kit, width, blocks, skip, dropout):
    layers = [ConvBlock(in_shape[0], width, kit, 3)]
    cin = width
    for i, n in enumerate(blocks):
        cout = width * 2**i
        for j in range(n):
            layers.append(_basic_block(cin, cout, 2 if (i > 0 and j == 0) else 1, kit, skip))
            cin = cout
    return Backbone(nn.Sequential(*layers), Head(cin, (), num_classes, kit, "avg", dropout))


@register_model
def resnet18(in_shape, num_classes, kit: LayerKit, width=64, blocks=(2, 2, 2, 2), skip=True, dropout=0.0):
    return _resnet(in_shape, num_classes, kit, width, blocks, skip, dropout)


@register_model
def resnet20(in_shape, num_classes, kit: LayerKit, width=16, blocks=(3, 3, 3), skip=True, dropout=0.0):
    return _resnet(in_shape, num_classes, kit, width, blocks, skip, dropout)
