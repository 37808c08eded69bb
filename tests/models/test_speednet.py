"""The speedrun parts (airbench94): model=speednet and its whitening/identity init, the norm group's momentum, eps
and affine_weight, optimizer.norm_lr_scale and the experiment=speedrun/cifar10 preset (the Lookahead callback:
tests/callbacks/test_lookahead.py)."""

import functools
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F

import trickbench.models.speednet  # noqa: F401  (registers model=speednet)
from trickbench.callbacks import FreezeWhiteningBias
from trickbench.config.validate import validate
from trickbench.errors import ConfigError
from trickbench.models import build_model, count_params
from trickbench.models.speednet import patch_second_moments
from trickbench.optim import build_optimizer, build_scheduler

CIFAR, FMNIST = (3, 32, 32), (1, 28, 28)


@functools.lru_cache(maxsize=None)
def composed(*overrides: str):
    cfg = compose_cfg(list(overrides))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def build(*overrides: str, shape=CIFAR) -> nn.Module:
    cfg = composed("model=speednet", *overrides)
    return build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, shape, 10)


# ---- model=speednet --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [CIFAR, FMNIST], ids=["32x32x3", "28x28x1"])
def test_shapes_and_backward(shape):
    net = build("norm=batch", "activation=gelu", "model.widths=[8,16,16]", shape=shape)
    x = torch.randn(4, *shape)
    feats = net.features(x)
    # 32 -> 31 (2x2 conv, no padding) -> 15 -> 7 -> 3; 28 -> 27 -> 13 -> 6 -> 3
    assert feats.shape == (4, 16, 3, 3)
    out = net(x)
    assert out.shape == (4, 10)
    F.cross_entropy(out, torch.arange(4)).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_param_count_by_hand():
    net = build("norm=batch", "model.widths=[4,8,8]")
    whitening = 24 * 3 * 2 * 2 + 24  # 2 x 3 x 2^2 filters of 3 x 2 x 2, with bias
    convs = (24 * 4 + 4 * 4 + 4 * 8 + 8 * 8 + 8 * 8 + 8 * 8) * 9  # bias-free 3x3 convs (a norm follows each)
    norms = 2 * 2 * (4 + 8 + 8)  # two BatchNorms per block, weight + bias
    linear = 8 * 10  # bias-free
    assert count_params(net) == whitening + convs + norms + linear == 3496
    assert count_params(build("norm=batch")) == 1_972_792  # airbench94's net ("2M parameters")


def test_logit_scale_and_identity_init():
    net = build("norm=batch", "model.widths=[8,16,16]").eval()
    x = torch.randn(2, 3, 32, 32)
    head = net.head
    torch.testing.assert_close(net(x), head[1](head[0](net.features(x))) / 9)
    conv_in, conv_same = net.features[2][0], net.features[2][4][0]  # 24 -> 8 (first cin=24 > 8 filters), 8 -> 8
    y = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(conv_same(y), y)
    z = torch.randn(2, 24, 5, 5)
    torch.testing.assert_close(conv_in(z), z[:, :8])


@pytest.mark.parametrize("key,value", [("widths", "[]"), ("logit_scale", "0"), ("whiten", "maybe")])
def test_bad_model_options_are_one_line_errors(key, value):
    with pytest.raises(ConfigError) as e:
        build(f"model.{key}={value}")
    assert str(e.value).startswith(f"model.{key}=") and "\n" not in str(e.value)


def correlated_images(n: int, seed: int) -> torch.Tensor:
    """Standardized images whose neighbouring pixels and channels are strongly correlated."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.avg_pool2d(torch.randn(n, 3, 34, 34, generator=g), 3, stride=1)
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.6, 0.5], [0.0, 0.0, 0.4]])
    x = torch.einsum("dc,nchw->ndhw", mix, smooth)
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def second_moments_of_outputs(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    y = F.conv2d(x, conv.weight)[:, : conv.out_channels // 2]  # the +v half, without the bias
    y = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]).double()
    return y.T @ y / len(y)


def test_whitening_decorrelates_patches():
    x = correlated_images(64, seed=0)
    raw = patch_second_moments(x, 2)
    raw_corr = raw / raw.diag().sqrt().outer(raw.diag().sqrt())
    assert (raw_corr - torch.eye(12, dtype=raw.dtype)).abs().max() > 0.7  # before: strongly correlated
    net = build("norm=batch", "model.widths=[4,8,8]")
    net.init_from_data(x)
    conv = net.features[0]
    eigenvalues = torch.linalg.eigvalsh(raw).flip(0)
    on_fit_images = second_moments_of_outputs(conv, x)
    # exactly diagonal on the images it was fit on: lambda / (lambda + eps), close to 1 as lambda >> eps = 5e-4
    torch.testing.assert_close(on_fit_images, torch.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-6, rtol=1e-5)
    unseen = second_moments_of_outputs(conv, correlated_images(64, seed=1))
    assert (unseen - torch.eye(12, dtype=unseen.dtype)).abs().max() < 0.05
    torch.testing.assert_close(conv.weight[12:], -conv.weight[:12])  # both signs survive the activation


def test_frozen_whitening_gets_no_gradient_nor_update():
    net = build("norm=batch", "model.widths=[4,8,8]")
    net.init_from_data(correlated_images(4, seed=0))
    conv = net.features[0]
    before = conv.weight.clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(net(torch.randn(2, *CIFAR)), torch.arange(2)).backward()
        optimizer.step()
    assert not conv.weight.requires_grad and conv.weight.grad is None
    assert torch.equal(conv.weight, before)
    assert conv.bias.grad is not None  # the bias trains (until FreezeWhiteningBias's epoch)
    trainable = build("norm=batch", "model.widths=[4,8,8]", "model.whiten_trainable=true")
    assert trainable.features[0].weight.requires_grad


def test_whiten_false_leaves_init_from_data_a_no_op():
    net = build("model.whiten=false", "model.widths=[4,8,8]")
    before = net.features[0].weight.clone()
    net.init_from_data(correlated_images(4, seed=0))
    assert torch.equal(net.features[0].weight, before) and net.features[0].weight.requires_grad


def test_freeze_whitening_bias_follows_the_epoch():
    net = build("model.widths=[4,8,8]")
    callback, module = FreezeWhiteningBias(epochs=3), SimpleNamespace(net=net)
    for epoch, trainable in [(0, True), (2, True), (3, False), (7, False)]:
        callback.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), module)
        assert net.features[0].bias.requires_grad is trainable


# ---- norm: momentum, eps, affine_weight -----------------------------------------------------------------------
def test_norm_settings_reach_every_batchnorm():
    net = build("norm=batch", "norm.momentum=0.4", "norm.eps=1e-12", "norm.affine_weight=false")
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6
    for bn in bns:
        assert (bn.momentum, bn.eps) == (0.4, 1e-12)
        assert not bn.weight.requires_grad and bn.bias.requires_grad and bool((bn.weight == 1).all())


def test_norm_defaults_build_the_same_network_as_before():
    cfg = composed("norm=batch", "model.head=[16]")
    assert (cfg.norm.momentum, cfg.norm.eps, cfg.norm.affine_weight) == (0.1, 1e-5, True)
    old_style = {"name": "batch", "placement": "before_act"}  # a norm config from before these keys
    nets = []
    for norm_cfg in (cfg.norm, old_style):
        torch.manual_seed(0)
        nets.append(build_model(cfg.model, cfg.activation, norm_cfg, cfg.init, FMNIST, 10))
    assert repr(nets[0]) == repr(nets[1])
    new, old = (net.state_dict() for net in nets)
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)
    assert all(p.requires_grad for p in nets[0].parameters())


@pytest.mark.parametrize("norm", ["group", "layer", "instance"])
def test_eps_and_affine_weight_reach_the_other_norms(norm):
    net = build(f"norm={norm}", "norm.eps=1e-3", "norm.affine_weight=false", "model.widths=[8,8,8]")
    layers = [m for m in net.modules() if isinstance(m, nn.GroupNorm | nn.InstanceNorm2d)]
    assert len(layers) == 6 and all(m.eps == 1e-3 and not m.weight.requires_grad for m in layers)


BAD_NORM = [
    (["norm=batch", "norm.momentum=0"], "norm.momentum", 0),
    (["norm=batch", "norm.momentum=1.5"], "norm.momentum", 1.5),
    (["norm=batch", "norm.eps=0"], "norm.eps", 0),
    (["norm=batch", "norm.affine_weight=yes"], "norm.affine_weight", "yes"),
    (["norm=group", "+norm.momentum=0.1"], "norm.momentum", 0.1),
]


@pytest.mark.parametrize("overrides,key,value", BAD_NORM, ids=[" ".join(o) for o, _, _ in BAD_NORM])
def test_bad_norm_values_are_one_line_errors(overrides, key, value):
    with pytest.raises(ConfigError) as e:
        build(*overrides, "model.widths=[4,8,8]")
    assert str(e.value).startswith(f"{key}={value!r}: ") and "\n" not in str(e.value)


# ---- optimizer.norm_lr_scale -----------------------------------------------------------------------------------
def norm_param_ids(net: nn.Module) -> set[int]:
    return {id(p) for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}


@pytest.mark.parametrize("no_bias_decay", [False, True])
def test_norm_lr_scale_puts_norm_layers_in_their_own_group(no_bias_decay):
    net = build("norm=batch", "model.widths=[4,8,8]")
    overrides = ["optimizer=nesterov", "optimizer.lr=1.5", "optimizer.weight_decay=0.01", "optimizer.norm_lr_scale=64"]
    cfg = composed(*overrides, f"optimizer.no_bias_decay={str(no_bias_decay).lower()}").optimizer
    groups = build_optimizer(net, cfg, global_batch=1024).param_groups
    *others, norm = groups
    assert {id(p) for p in norm["params"]} == norm_param_ids(net)
    assert norm["lr"] == 96.0 and norm["weight_decay"] == (0.0 if no_bias_decay else 0.01 / 64)
    assert all(g["lr"] == 1.5 for g in others) and others[0]["weight_decay"] == 0.01
    assert len(others) == (2 if no_bias_decay else 1)
    if no_bias_decay:  # the whitening bias: not a norm layer's, so no decay but the plain lr
        assert [p.shape for p in others[1]["params"]] == [(24,)]
    # a schedule multiplies every group's lr by the same factor: the ratio holds at every step
    scheduler = build_scheduler(build_optimizer(net, cfg, 1024), composed("scheduler=linear").scheduler, 20, 4)
    for _ in range(20):
        optimizer = scheduler["scheduler"].optimizer
        assert optimizer.param_groups[-1]["lr"] == pytest.approx(64 * optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler["scheduler"].step()


def test_norm_lr_scale_default_keeps_one_group_and_bad_values_fail():
    cfg = composed("optimizer=nesterov")
    assert cfg.optimizer.norm_lr_scale == 1.0
    (group,) = build_optimizer(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), cfg.optimizer, 128).param_groups
    assert len(group["params"]) == 4
    with pytest.raises(ConfigError, match=r"^optimizer.norm_lr_scale=0: a number > 0"):
        validate(compose_cfg(["optimizer.norm_lr_scale=0"]))


# ---- experiment=speedrun/cifar10 -------------------------------------------------------------------------------
def test_speedrun_preset_is_airbench94_converted_to_a_mean_loss():
    cfg = composed("experiment=speedrun/cifar10")
    validate(cfg)
    opt = cfg.optimizer
    momentum, batch = 0.85, 1024
    airbench_lr = 11.5 / (batch * (1 + 1 / (1 - momentum)))  # for a loss summed over the batch
    airbench_wd = 0.0153 * batch / 11.5
    assert opt.momentum == momentum and cfg.data.batch_size == batch
    assert opt.lr == pytest.approx(airbench_lr * batch)  # mean loss: gradients 1/batch as large
    assert opt.weight_decay == pytest.approx(airbench_wd / batch)
    assert opt.lr * opt.weight_decay == pytest.approx(airbench_lr * airbench_wd)  # same decay per step
    assert (cfg.norm.momentum, cfg.norm.eps, cfg.norm.affine_weight, opt.norm_lr_scale) == (0.4, 1e-12, False, 64.0)
    assert (cfg.model.name, cfg.activation.name, cfg.loss.label_smoothing, cfg.trainer.max_epochs) == (
        "speednet",
        "gelu",
        0.2,
        10,
    )
    assert cfg.callbacks.lookahead._target_ == "trickbench.callbacks.lookahead.Lookahead"
