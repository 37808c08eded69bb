"""The ResNets (models/resnet.py) and their Bag-of-Tricks options: resnet50 against torchvision's, stride placement
(variant a/b), stems (cifar, imagenet, deep = variant c), avg-pool shortcuts (variant d), zero-gamma blocks, and errors
where a trick does not apply."""

import math

import pytest
import torch
import torchvision
from conftest import compose_cfg
from torch import nn

from trickbench.config.validate import validate
from trickbench.errors import ConfigError
from trickbench.models import build_model, count_params
from trickbench.models.blocks import Stage
from trickbench.nn import INITS

SHAPES = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
NORM_PARAMS = 2  # gamma and beta per channel (batch norm)


def build(model: dict, norm="batch", init="default", shape=SHAPES["cifar10"], placement="before_act") -> nn.Module:
    return build_model(model, {"name": "relu"}, {"name": norm, "placement": placement}, {"name": init}, shape, 10)


def composed(overrides: list[str], shape=SHAPES["cifar10"]) -> nn.Module:
    cfg = compose_cfg(overrides)
    validate(cfg)
    return build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, shape, 10)


def convs(net: nn.Module) -> list[tuple]:
    return [
        (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding)
        for c in net.modules()
        if isinstance(c, nn.Conv2d)
    ]


def residual_blocks(net: nn.Module) -> list[Stage]:
    return [m for m in net.features if isinstance(m, Stage)]


def downsampling_blocks(net: nn.Module) -> list[Stage]:
    return [
        b
        for b in residual_blocks(net)
        if any(c.stride == (2, 2) for c in b.convs.modules() if isinstance(c, nn.Conv2d))
    ]


SMALL50 = {"name": "resnet50", "width": 8}


def test_resnet50_b_with_imagenet_stem_is_torchvisions_resnet50():
    torch.manual_seed(0)
    net = composed(["model=resnet50", "model.variant=b", "model.stem=imagenet", "norm=batch"])
    reference = torchvision.models.resnet50(num_classes=10)
    assert count_params(net) == count_params(reference)
    # same convs in the same order: channels, kernels, strides (on the 3x3) and paddings
    assert convs(net) == convs(reference)


@pytest.mark.parametrize("variant", ["a", "b", "c", "d"])
def test_bottleneck_stride_sits_on_1x1_for_a_and_on_3x3_otherwise(variant):
    net = build({**SMALL50, "variant": variant, "stem": "deep"})
    blocks = downsampling_blocks(net)
    assert len(blocks) == 3  # the first block of stages 2, 3, 4
    for block in blocks:
        conv1x1, conv3x3 = block.convs[0][0], block.convs[1][0]
        assert conv1x1.kernel_size == (1, 1) and conv3x3.kernel_size == (3, 3)
        strided = conv1x1 if variant == "a" else conv3x3
        assert [conv1x1.stride, conv3x3.stride] == [(2, 2) if c is strided else (1, 1) for c in (conv1x1, conv3x3)]
    # moving a stride or pooling the shortcut adds no parameters
    assert count_params(net) == count_params(build({**SMALL50, "variant": "a", "stem": "deep"}))


def test_bottleneck_widths_and_feature_shapes():
    net = build(SMALL50, shape=SHAPES["fashion_mnist"])
    x = torch.randn(2, *SHAPES["fashion_mnist"])
    shapes = []
    for layer in net.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    # cifar stem keeps 28x28; stages 2-4 halve it with ceil (28-14-7-4); widths 4 * (8, 16, 32, 64)
    assert shapes[0] == (8, 28, 28)
    blocks = [3, 4, 6, 3]
    expected = [(32 * 2**i, math.ceil(28 / 2**i), math.ceil(28 / 2**i)) for i, n in enumerate(blocks) for _ in range(n)]
    assert shapes[1:] == expected


def _stem_params(stem: str, cin: int, w: int) -> int:
    h = w // 2
    return {
        "cifar": 9 * cin * w + NORM_PARAMS * w,
        "imagenet": 49 * cin * w + NORM_PARAMS * w,
        "deep": 9 * cin * h + 9 * h * h + 9 * h * w + NORM_PARAMS * (h + h + w),
    }[stem]


@pytest.mark.parametrize("data", SHAPES)
@pytest.mark.parametrize("stem", ["cifar", "imagenet", "deep"])
def test_stem_output_size_and_params(stem, data):
    shape = SHAPES[data]
    net = build({"name": "resnet20", "stem": stem}, shape=shape)
    cifar = build({"name": "resnet20", "stem": "cifar"}, shape=shape)
    assert count_params(net) - count_params(cifar) == _stem_params(stem, shape[0], 16) - _stem_params(
        "cifar", shape[0], 16
    )
    n_stem = len(net.features) - 9  # resnet20: 9 residual blocks after the stem
    size = shape[1] if stem == "cifar" else math.ceil(math.ceil(shape[1] / 2) / 2)  # conv s2, then max-pool s2
    x = net.features[:n_stem](torch.randn(2, *shape))
    assert x.shape == (2, 16, size, size)
    assert net(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("model", ["resnet20", "resnet50"])
def test_variant_c_is_the_deep_stem(model):
    base = {"name": model, "width": 8}
    net = build({**base, "variant": "c"})
    assert [t[:4] for t in convs(net)[:3]] == [(3, 4, (3, 3), (2, 2)), (4, 4, (3, 3), (1, 1)), (4, 8, (3, 3), (1, 1))]
    assert isinstance(net.features[3], nn.MaxPool2d)
    # c = the deep stem (plus ResNet-B's stride on bottlenecks): the same convs as spelling it out
    spelled = {**base, "stem": "deep", "variant": "b" if model == "resnet50" else "a"}
    assert convs(net) == convs(build(spelled)) == convs(build({**base, "variant": "c", "stem": "deep"}))


@pytest.mark.parametrize("model", ["resnet20", "resnet50"])
def test_variant_d_pools_downsampling_shortcuts(model):
    plain, d = (
        build({"name": model, "width": 8, "variant": "b" if model == "resnet50" else "a"}),
        build({"name": model, "width": 8, "variant": "d"}),
    )
    assert count_params(plain) == count_params(d)
    for block in residual_blocks(d):
        layers = list(block.shortcut) if isinstance(block.shortcut, nn.Sequential) else []
        down = block in downsampling_blocks(d)
        assert any(isinstance(m, nn.AvgPool2d) for m in layers) == down
        if down:
            pool, conv = layers[0], layers[1]
            assert (pool.kernel_size, pool.stride, pool.ceil_mode) == (2, 2, True)
            assert conv.kernel_size == (1, 1) and conv.stride == (1, 1)
    # bottleneck stage 1 widens 8 -> 32 at stride 1: a projection without pooling
    if model == "resnet50":
        assert [type(m) for m in residual_blocks(d)[0].shortcut] == [nn.Conv2d, nn.BatchNorm2d]


def test_variant_d_pool_averages_only_real_pixels_on_odd_maps():
    pool = downsampling_blocks(build({"name": "resnet20", "variant": "d"}))[0].shortcut[0]
    x = torch.arange(49.0).reshape(1, 1, 7, 7)
    out = pool(x)
    assert out.shape == (1, 1, 4, 4)  # the size a stride-2 1x1 conv gives on 7x7
    assert out[0, 0, 0, 0] == (0 + 1 + 7 + 8) / 4
    assert out[0, 0, 0, 3] == (6 + 13) / 2  # the ceil-mode window over the edge averages its 2 real pixels
    assert out[0, 0, 3, 3] == 48


def _check_blocks_start_as_shortcut(net: nn.Module, x: torch.Tensor) -> None:
    blocks = residual_blocks(net)
    assert blocks
    for layer in net.features:
        if layer in blocks:
            assert (layer.convs[-1][1].weight == 0).all()
            torch.testing.assert_close(layer(x), layer.post_act(layer.shortcut(x)), rtol=0, atol=0)
        x = layer(x)


@pytest.mark.parametrize("placement", ["before_act", "after_act"])
@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("model", ["resnet20", "resnet50"])
def test_zero_gamma_blocks_return_their_shortcut(model, norm, placement):
    torch.manual_seed(0)
    spec = {"name": model, "width": 8, "zero_init_residual": True, "variant": "d"}
    net = build(spec, norm=norm, init="he_normal", placement=placement)
    _check_blocks_start_as_shortcut(net, torch.randn(4, 3, 32, 32))
    # control: with gamma as initialised, a block adds something to its shortcut
    block = residual_blocks(build({**spec, "zero_init_residual": False}, norm=norm))[1]
    x = torch.randn(4, 8 * (4 if model == "resnet50" else 1), 32, 32)
    assert not torch.allclose(block(x), block.post_act(block.shortcut(x)))


@pytest.mark.parametrize("init", list(INITS))
def test_zero_gamma_survives_every_init(init):
    net = build({"name": "resnet20", "width": 4, "zero_init_residual": True}, init=init)
    gammas = [b.convs[-1][1].weight for b in residual_blocks(net)]
    assert len(gammas) == 9 and all((g == 0).all() for g in gammas)
    others = [
        m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d) and all(m.weight is not g for g in gammas)
    ]
    assert others and all((w == 1).all() for w in others)


def test_tricks_combine_and_train():
    torch.manual_seed(0)
    overrides = ["model=resnet50", "model.width=8", "model.stem=deep", "trick=[batchnorm,he_init,zero_gamma,resnet_d]"]
    net = composed(overrides, SHAPES["fashion_mnist"])
    x = torch.randn(4, *SHAPES["fashion_mnist"])
    _check_blocks_start_as_shortcut(net, x)
    assert len([m for m in net.modules() if isinstance(m, nn.AvgPool2d)]) == 3
    assert isinstance(net.features[3], nn.MaxPool2d)  # the deep stem
    nn.functional.cross_entropy(net(x), torch.arange(4)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize(
    "model,start,allowed",
    [
        ({"name": "resnet18", "variant": "b"}, "model.variant='b'", "['a', 'c', 'd']"),
        ({"name": "resnet20", "variant": "b"}, "model.variant='b'", "['a', 'c', 'd']"),
        ({"name": "resnet20", "variant": "d", "skip": False}, "model.variant='d'", "['a', 'c']"),
        ({"name": "resnet50", "variant": "d", "skip": False}, "model.variant='d'", "['a', 'b', 'c']"),
        ({"name": "resnet50", "variant": "c", "stem": "cifar"}, "model.variant='c'", "model.stem=null or deep"),
        ({"name": "resnet20", "variant": "c", "stem": "imagenet"}, "model.variant='c'", "model.stem=null or deep"),
        ({"name": "resnet50", "variant": "e"}, "model.variant='e'", "['a', 'b', 'c', 'd']"),
        ({"name": "resnet50", "stem": "tiny"}, "model.stem='tiny'", "['cifar', 'imagenet', 'deep']"),
        ({"name": "resnet20", "zero_init_residual": True, "skip": False}, "model.zero_init_residual=True", "false"),
        ({"name": "resnet20", "zero_init_residual": "yes"}, "model.zero_init_residual='yes'", "true or false"),
    ],
)
def test_inapplicable_options_raise_one_line(model, start, allowed):
    with pytest.raises(ConfigError) as e:
        build(model)
    message = str(e.value)
    assert message.startswith(start) and allowed in message and "\n" not in message


def test_zero_gamma_without_norm_raises():
    with pytest.raises(ConfigError) as e:
        build({"name": "resnet50", "width": 8, "zero_init_residual": True}, norm="none")
    assert str(e.value).startswith("model.zero_init_residual=True: norm=none has no gamma")


def test_zero_gamma_with_a_fixed_gamma_raises():
    with pytest.raises(ConfigError) as e:
        composed(["model=resnet20", "trick=zero_gamma", "norm=batch", "norm.affine_weight=false"])
    assert str(e.value) == "model.zero_init_residual=True: norm.affine_weight=false fixes gamma at 1; allowed: false"


@pytest.mark.parametrize("trick,key", [("resnet_d", "variant='d'"), ("zero_gamma", "zero_init_residual=True")])
@pytest.mark.parametrize("model", ["cnn", "vgg16"])
def test_resnet_tricks_on_other_models_raise(model, trick, key):
    with pytest.raises(ConfigError) as e:
        composed([f"model={model}", f"trick={trick}"])
    assert str(e.value).startswith(f"model.{key}: not an option of model={model}")
