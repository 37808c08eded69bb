"""Plain conv stacks: the lecture's CNN, LeNet-5 and VGG16, all compositions of Stage(ConvBlock...)."""

from torch import nn

from trickbench.models.blocks import POOLS, Backbone, ConvBlock, Head, LayerKit, Stage, output_shape
from trickbench.models.registry import DEEPEST, WIDEST, input_shape, int_list, register_model
from trickbench.rules import Relation, Rule, integer, one_of, optional

RULES = [
    # no block is no convolution: a net of FC layers only is model=mlp, under its own name in results.json
    Rule("model.channels", int_list(), f"a non-empty list of integers >= 1 (<= {WIDEST}), the channels of each block"),
    Rule("model.convs_per_block", lambda v: integer(1)(v) and v <= DEEPEST, f"an integer in [1, {DEEPEST}]"),
    Rule("model.kernel_size", integer(1), "an integer >= 1"),
    Relation(
        "model.kernel_size",
        lambda k, cfg: k <= min(input_shape(cfg)[1:]),
        lambda cfg: f"an integer in [1, {min(input_shape(cfg)[1:])}], at most the images' side",
    ),
    Rule("model.pool", optional(one_of(POOLS)), f"one of {list(POOLS)}"),
    Rule(
        "model.head", int_list(empty_ok=True), f"a list of integers in [1, {WIDEST}], the hidden FC widths ([]: none)"
    ),
]


def _conv_stages(cin, widths, convs, kit, kernel_size, pool, skip, conv_dropout, in_size):
    """One Stage per (width, n_convs); pooling is skipped once the map is smaller than 2x2."""
    stages, size = [], in_size
    for cout, n in zip(widths, convs, strict=True):
        block_pool = pool if pool not in (None, "none") and size >= 2 else None
        blocks = [ConvBlock(cin if i == 0 else cout, cout, kit, kernel_size, dropout=conv_dropout) for i in range(n)]
        stages.append(Stage(blocks, cin, cout, kit, pool=block_pool, skip=skip))
        size = (size + 1) // 2 if block_pool else size
        cin = cout
    return nn.Sequential(*stages)


def _with_head(features, in_shape, head, num_classes, kit, dropout):
    c, h, w = output_shape(features, in_shape)
    return Backbone(features, Head(c * h * w, head, num_classes, kit, "flatten", dropout))


@register_model
def cnn(
    in_shape,
    num_classes,
    kit: LayerKit,
    channels=(32, 64),
    convs_per_block=1,
    kernel_size=3,
    pool="max",
    head=(128,),
    skip=False,
    dropout=0.0,
    conv_dropout=0.0,
):
    features = _conv_stages(
        in_shape[0],
        channels,
        [convs_per_block] * len(channels),
        kit,
        kernel_size,
        pool,
        skip,
        conv_dropout,
        in_shape[1],
    )
    return _with_head(features, in_shape, head, num_classes, kit, dropout)


@register_model
def vgg16(in_shape, num_classes, kit: LayerKit, head=(512,), skip=False, dropout=0.5, conv_dropout=0.0):
    widths, convs = (64, 128, 256, 512, 512), (2, 2, 3, 3, 3)
    features = _conv_stages(in_shape[0], widths, convs, kit, 3, "max", skip, conv_dropout, in_shape[1])
    return _with_head(features, in_shape, head, num_classes, kit, dropout)


@register_model
def lenet5(in_shape, num_classes, kit: LayerKit, pool="avg", dropout=0.0, conv_dropout=0.0):
    features = nn.Sequential(
        Stage([ConvBlock(in_shape[0], 6, kit, 5, padding=2, dropout=conv_dropout)], in_shape[0], 6, kit, pool=pool),
        Stage([ConvBlock(6, 16, kit, 5, padding=0, dropout=conv_dropout)], 6, 16, kit, pool=pool),
    )
    return _with_head(features, in_shape, (120, 84), num_classes, kit, dropout)
