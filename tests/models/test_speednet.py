"""model=speednet (models/speednet.py, airbench94's net): shapes, parameter count, logit scale and identity init,
bad options, and the whitening conv fit to the data's patches (frozen, or trainable). The rest of the speedrun: its
norm settings in tests/nn/test_norm.py, optimizer.norm_lr_scale in tests/test_optim.py, FreezeWhiteningBias in
tests/callbacks/test_whitening.py, Lookahead in tests/callbacks/test_lookahead.py, the experiment=speedrun/cifar10
preset in tests/experiments/test_speedrun.py."""

import pytest
import torch
from conftest import build_speednet as build
from torch import nn
from torch.nn import functional as F

import trickbench.models.speednet  # noqa: F401  (registers model=speednet)
from trickbench.errors import ConfigError
from trickbench.models import count_params
from trickbench.models.speednet import patch_second_moments

CIFAR, FMNIST = (3, 32, 32), (1, 28, 28)


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
