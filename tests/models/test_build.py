"""Models built from composed configs: every model/activation/norm/init option, the model x norm grid,
parameter counts, layer order, init statistics and skip connections."""

import functools
import math

import pytest
import torch
from conftest import CONF, compose_cfg
from omegaconf import OmegaConf
from torch import nn

from trickbench.errors import ConfigError
from trickbench.models import build_model, count_params
from trickbench.models.blocks import ConvBlock

SHAPES = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
DEFAULTS = {k: v for d in OmegaConf.load(CONF / "train.yaml").defaults if not isinstance(d, str) for k, v in d.items()}
REJECTED = {("mlp", "instance")}  # an MLP has no feature maps to instance-normalize


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def composed(overrides: tuple[str, ...]):
    # composing is most of a small model's test time; read-only so the shared config cannot drift
    cfg = compose_cfg(list(overrides))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def build(overrides: list[str], shape=SHAPES["fashion_mnist"]) -> nn.Module:
    cfg = composed(tuple(overrides))
    return build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, shape, 10)


def check_forward_backward(net: nn.Module, shape, batch: int) -> None:
    x, y = torch.randn(batch, *shape), torch.arange(batch) % 10
    out = net(x)
    assert out.shape == (batch, 10)
    nn.functional.cross_entropy(out, y).backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


# Each option varied alone; the grid below adds the model x norm cells where neither is the default
# (a cell with a default on one side is the other side varied alone).
SLIM = {"model=resnet50": ["model.width=8"]}  # full width is covered by test_resnet.py; here it costs a minute
# Some model presets choose their own norm (ResNets: batch, test_model_defaults.py); alone = with train.yaml's norm.
OWN_NORM = {f"model={m}": [f"norm={DEFAULTS['norm']}"] for m in ("resnet18", "resnet20", "resnet50", "speednet")}
ALONE = [
    [f"{g}={o}", *SLIM.get(f"{g}={o}", []), *OWN_NORM.get(f"{g}={o}", [])]
    for g in ("model", "activation", "norm", "init")
    for o in options(g)
]
GRID = [
    [f"model={m}", f"norm={n}", *SLIM.get(f"model={m}", [])]
    for m in options("model")
    for n in options("norm")
    if m != DEFAULTS["model"] and n != DEFAULTS["norm"] and (m, n) not in REJECTED
]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("overrides", ALONE + GRID, ids=[",".join(o) for o in ALONE + GRID])
def test_builds_and_backprops(overrides, shape):
    torch.manual_seed(0)
    check_forward_backward(build(overrides, shape), shape, batch=4)


def test_grid_covers_every_model_and_norm():
    # guards the dedup above: every model x norm pair is built by some case, or rejected
    covered = {(m, DEFAULTS["norm"]) for m in options("model")} | {(DEFAULTS["model"], n) for n in options("norm")}
    covered |= {(o[0].split("=")[1], o[1].split("=")[1]) for o in GRID} | REJECTED
    assert covered == {(m, n) for m in options("model") for n in options("norm")}


@pytest.mark.parametrize("model,norm", sorted(REJECTED))
def test_rejected_model_norm_pair_raises(model, norm):
    with pytest.raises(ConfigError) as e:
        build([f"model={model}", f"norm={norm}"])
    assert str(e.value).startswith(f"norm.name={norm!r}")


@pytest.mark.parametrize(
    "overrides,shape,params",
    [
        (["model=lenet5"], SHAPES["fashion_mnist"], 61_706),
        (["model=resnet18", "norm=batch"], SHAPES["cifar10"], 11_173_962),
    ],
    ids=["lenet5-fashion_mnist", "resnet18-batch-cifar10"],
)
def test_reference_param_counts(overrides, shape, params):
    assert count_params(build(overrides, shape)) == params


@pytest.mark.parametrize("norm", [n for n in options("norm") if n != "none"])
def test_norm_placement_sets_layer_order(norm):
    def first_block(placement):
        net = build([f"norm={norm}", f"norm.placement={placement}"])
        return next(m for m in net.modules() if isinstance(m, ConvBlock))

    before_block, after_block = first_block("before_act"), first_block("after_act")
    before, after = [type(m) for m in before_block], [type(m) for m in after_block]
    assert before[0] is after[0] is nn.Conv2d
    assert before[2] is after[1] is nn.ReLU
    assert before[1] is after[2] and before[1] not in (nn.Conv2d, nn.ReLU, nn.Identity)
    # a conv bias right before a norm is cancelled by it, so only after_act keeps one
    assert before_block[0].bias is None and after_block[0].bias is not None


def _weights(net):
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _expected_std(init: str, m: nn.Module) -> float:
    fan_out, fan_in = m.weight.shape[0] * m.weight[0, 0].numel(), m.weight[0].numel()
    return {
        "he": math.sqrt(2 / fan_in),
        "glorot": math.sqrt(2 / (fan_in + fan_out)),
        "default": 1 / math.sqrt(3 * fan_in),
    }[init.split("_")[0]]  # default: kaiming_uniform(a=sqrt(5))


@pytest.mark.parametrize("init", options("init"))
def test_init_weight_std_and_biases(init):
    torch.manual_seed(0)
    layers = _weights(build([f"init={init}"]))
    wide = [m for m in layers if m.weight.numel() >= 10_000]
    assert wide, "no layer wide enough to estimate a std"
    for m in wide:
        std = _expected_std(init, m)
        assert m.weight.std().item() == pytest.approx(std, rel=0.1)
        # uniform inits are bounded by sqrt(3) std; a normal one this large always exceeds that
        bounded = m.weight.abs().max().item() <= math.sqrt(3) * std * 1.001
        assert bounded == (init == "default" or init.endswith("uniform"))
    biases = [m.bias for m in layers if m.bias is not None]
    assert biases
    if init == "default":
        assert all((b != 0).any() for b in biases)
    else:
        assert all((b == 0).all() for b in biases)


def test_skip_adds_shortcut_convs_on_cnn():
    plain, skip = build(["model=cnn"]), build(["model=cnn", "model.skip=true"])
    assert all(s.shortcut is None for s in plain.features)
    # 1 -> 32 and 32 -> 64 channels, each block pooled: both shortcuts are strided 1x1 convs
    shortcuts = [s.shortcut[0] for s in skip.features]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in shortcuts] == [
        (1, 32, (1, 1), (2, 2)),
        (32, 64, (1, 1), (2, 2)),
    ]
    assert count_params(skip) - count_params(plain) == (1 * 32 + 32) + (32 * 64 + 64)
    check_forward_backward(skip, SHAPES["fashion_mnist"], batch=2)


def test_skip_uses_identity_where_shape_is_kept():
    net = build(["model=cnn", "model.skip=true", "model.channels=[8,8]", "model.pool=none"])
    assert isinstance(net.features[0].shortcut[0], nn.Conv2d)
    stage = net.features[1]
    assert isinstance(stage.shortcut, nn.Identity)
    x = torch.randn(2, 8, 28, 28)
    torch.testing.assert_close(stage(x), stage.convs(x) + x)


def test_vgg16_on_28x28_pools_down_to_1x1():
    net = build(["model=vgg16"], SHAPES["fashion_mnist"])
    net.eval()
    with torch.no_grad():
        assert net.features(torch.zeros(1, *SHAPES["fashion_mnist"])).shape == (1, 512, 1, 1)
    assert net.head[1].layers[0].in_features == 512  # the first FC sees 512 x 1 x 1 features


def test_unknown_model_option_raises():
    with pytest.raises(ConfigError) as e:
        build(["+model.foo=1"])
    assert str(e.value).startswith("model.foo=1")


def test_a_second_model_of_the_same_name_is_refused():
    from trickbench.models.registry import MODELS, register_model

    def cnn(in_shape, num_classes, kit):  # another module's net named like the registered one
        raise AssertionError("never built")

    cnn.__module__ = "someones_models"
    before = MODELS["cnn"]
    with pytest.raises(ValueError, match=r"model name 'cnn' is registered twice: by trickbench\.models\.plain"):
        register_model(cnn)
    assert MODELS["cnn"] is before
    assert register_model(before) is before  # the same function again (a reload) is fine
