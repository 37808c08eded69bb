"""ResNets built from Stage/ConvBlock: basic-block resnet18/resnet20 and bottleneck resnet50, with the
Bag-of-Tricks tweaks (He et al. 2019) as options:
- model.variant: a (the original), b (bottleneck stride on the 3x3), c (the deep stem), d (downsampling shortcut
  = 2x2 avg-pool, then a stride-1 1x1 conv). On bottlenecks c and d include b, as in the paper's cumulative tweaks.
- model.stem: cifar (conv3x3 s1), imagenet (conv7x7 s2 + max-pool), deep (three conv3x3 + max-pool);
  null picks deep for variant c, else cifar.
- model.zero_init_residual: the last norm's gamma of every residual block starts at 0, so each block starts as
  act(shortcut(x)).
- model.stochastic_depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"): the drop probability p of the
  last residual block; block l of L drops with l / L x p (the paper's linear decay of survival). In training each
  sample's residual branch is dropped (the block gives act(shortcut(x))) or scaled by 1 / (1 - p_l); in eval every
  block is kept as it is. The paper drops a block for the whole mini-batch and scales at test time; this is the
  per-sample form of torchvision's StochasticDepth (mode row), the same in expectation."""

from torch import nn

from trickbench.errors import ConfigError
from trickbench.models.blocks import Backbone, ConvBlock, Head, LayerKit, Stage
from trickbench.models.registry import DEEPEST, WIDEST, int_list, register_model
from trickbench.rules import Relation, Rule, check, fraction, integer

STEMS = ("cifar", "imagenet", "deep")
VARIANTS = ("a", "b", "c", "d")


def _stem(cin: int, width: int, kit: LayerKit, stem: str) -> list[nn.Module]:
    if stem == "cifar":
        return [ConvBlock(cin, width, kit, 3)]
    pool = nn.MaxPool2d(3, 2, padding=1)
    if stem == "imagenet":
        return [ConvBlock(cin, width, kit, 7, 2), pool]
    half = width // 2  # ResNet-C: three 3x3 convs cost about what the 7x7 did
    return [ConvBlock(cin, half, kit, 3, 2), ConvBlock(half, half, kit, 3), ConvBlock(half, width, kit, 3), pool]


def _basic_block(cin, planes, stride, kit, skip, variant, drop):
    convs = [ConvBlock(cin, planes, kit, 3, stride), ConvBlock(planes, planes, kit, 3, act=False)]
    return Stage(convs, cin, planes, kit, stride=stride, skip=skip, post_act=True, avg_down=variant == "d", drop=drop)


def _bottleneck(cin, planes, stride, kit, skip, variant, drop):
    # ResNet-B: a strided 1x1 conv skips 3 pixels in 4; on the 3x3 the stride reads them all
    s1, s3 = (stride, 1) if variant == "a" else (1, stride)
    convs = [
        ConvBlock(cin, planes, kit, 1, s1),
        ConvBlock(planes, planes, kit, 3, s3),
        ConvBlock(planes, 4 * planes, kit, 1, act=False),
    ]
    return Stage(
        convs, cin, 4 * planes, kit, stride=stride, skip=skip, post_act=True, avg_down=variant == "d", drop=drop
    )


def _checked_stem(name, bottleneck, kit, skip, stem, variant, zero_init_residual) -> str:
    """Fails on options that do not apply to this network; returns the stem to build."""
    if variant not in VARIANTS:
        raise ConfigError("model.variant", variant, f"one of {list(VARIANTS)}")
    if stem not in (None, *STEMS):
        raise ConfigError("model.stem", stem, f"one of {list(STEMS)}, or null (deep for model.variant=c, else cifar)")
    applies = [v for v in VARIANTS if (bottleneck or v != "b") and (skip or v != "d")]
    if variant not in applies:
        why = (
            "pools the downsampling shortcut and model.skip=false has none"
            if variant == "d"
            else f"puts the stride on a bottleneck's 3x3 and model={name} has basic blocks"
        )
        raise ConfigError("model.variant", variant, f"{why}; allowed here: {applies}")
    if variant == "c" and stem not in (None, "deep"):
        raise ConfigError(
            "model.variant",
            variant,
            f"is the deep stem, so model.stem={stem} contradicts it; allowed with it: model.stem=null or deep",
        )
    if not isinstance(zero_init_residual, bool):
        raise ConfigError("model.zero_init_residual", zero_init_residual, "true or false")
    if zero_init_residual and not (kit.norm.enabled and kit.norm.affine_weight and skip):
        missing = "model.skip=false has no residual blocks"
        if skip:
            missing = (
                "norm=none has no gamma to zero"
                if not kit.norm.enabled
                else "norm.affine_weight=false fixes gamma at 1"
            )
        raise ConfigError("model.zero_init_residual", True, f"{missing}; allowed: false")
    return _stem_of(stem, variant)


def _stem_of(stem, variant) -> str:
    return stem or ("deep" if variant == "c" else "cifar")


RULES = [
    Rule(
        "model.width",
        lambda v: integer(1)(v) and v <= WIDEST,
        f"a positive integer (<= {WIDEST}): the channels of the first stage (doubled at each stage)",
    ),
    # a stage of no block would leave a stem and a head, reported as the ResNet it names
    Rule(
        "model.blocks",
        int_list(high=DEEPEST),
        f"at least one block per stage: a non-empty list of integers in [1, {DEEPEST}]",
    ),
    Relation(
        "model.width",
        lambda w, cfg: w >= 2 or _stem_of(cfg.model.get("stem"), cfg.model.get("variant")) != "deep",
        lambda cfg: "an integer >= 2 with the deep stem (its first convs have width // 2 channels)",
    ),
    Rule("model.stochastic_depth", fraction, "a number in [0, 1): the last residual block's drop probability"),
    Relation(
        "model.stochastic_depth",
        # other models refuse the key itself when built ("not an option of model=cnn")
        lambda p, cfg: not p or cfg.model.get("skip", True) or not str(cfg.model.get("name")).startswith("resnet"),
        lambda cfg: "model.skip=false has no residual branch to drop; allowed: 0",
    ),
]


def _check_stochastic_depth(p, skip, name) -> None:
    check({"model": {"stochastic_depth": p, "skip": skip, "name": name}}, RULES)


def drop_schedule(p_last: float, n_blocks: int) -> list[float]:
    """Stochastic depth's linear decay: block l = 1..L drops with probability l / L x p_last."""
    return [p_last * (i + 1) / n_blocks for i in range(n_blocks)]


def _resnet(in_shape, num_classes, kit, name, bottleneck, width, blocks, skip, dropout, stem, variant, zero_gamma, sd):
    stem = _checked_stem(name, bottleneck, kit, skip, stem, variant, zero_gamma)
    _check_stochastic_depth(sd, skip, name)
    drops = iter(drop_schedule(sd, sum(blocks)))
    make_block, expansion = (_bottleneck, 4) if bottleneck else (_basic_block, 1)
    layers, cin = _stem(in_shape[0], width, kit, stem), width
    for i, n in enumerate(blocks):
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            block = make_block(cin, width * 2**i, stride, kit, skip, variant, next(drops))
            if zero_gamma:  # init functions (nn/init.py) touch conv and linear weights only, so this stays 0
                nn.init.zeros_(block.convs[-1][1].weight)  # the last ConvBlock is conv -> norm
            layers.append(block)
            cin = width * 2**i * expansion
    return Backbone(nn.Sequential(*layers), Head(cin, (), num_classes, kit, "avg", dropout))


def _register(name: str, bottleneck: bool, width: int, blocks: tuple[int, ...]) -> None:
    """One builder per depth; the defaults in its signature are the model's options (registry.model_options)."""

    def builder(
        in_shape,
        num_classes,
        kit: LayerKit,
        width=width,
        blocks=blocks,
        skip=True,
        dropout=0.0,
        stem=None,
        variant="a",
        zero_init_residual=False,
        stochastic_depth=0.0,
    ):
        args = (width, blocks, skip, dropout, stem, variant, zero_init_residual, stochastic_depth)
        return _resnet(in_shape, num_classes, kit, name, bottleneck, *args)

    builder.__name__ = name
    register_model(builder)


_register("resnet18", bottleneck=False, width=64, blocks=(2, 2, 2, 2))
_register("resnet20", bottleneck=False, width=16, blocks=(3, 3, 3))
_register("resnet50", bottleneck=True, width=64, blocks=(3, 4, 6, 3))
