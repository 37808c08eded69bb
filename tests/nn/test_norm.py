"""The norm group's settings (nn/norm.py): momentum, eps and affine_weight reach every norm layer a model builds
(speednet's here), the defaults build the same network as a norm config without these keys, and bad values are
one-line ConfigErrors."""

import pytest
import torch
from conftest import build_speednet as build
from conftest import composed
from torch import nn

from trickbench.errors import ConfigError
from trickbench.models import build_model

FMNIST = (1, 28, 28)


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
