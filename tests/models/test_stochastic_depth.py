"""trick=stochastic_depth (Huang et al. 2016): in training each residual block drops its residual branch per sample
with the linear schedule l / L x p, whole-branch, the shortcut kept; in eval nothing is dropped; bad values and
non-ResNets are refused in one line; the trick composes with others and trains."""

import math

import pytest
import torch
from conftest import compose_cfg, tiny_run_overrides
from torch import nn
from torchvision.ops import StochasticDepth

from trickbench.config.validate import validate
from trickbench.errors import ConfigError
from trickbench.models import build_model
from trickbench.models.blocks import Stage
from trickbench.train import run

SHAPE = (3, 4, 4)  # small maps: the schedule is the same on any image size


def build(p: float, name="resnet20", **options) -> nn.Module:
    model = {"name": name, "width": 4, "stochastic_depth": p, **options}
    return build_model(
        model, {"name": "relu"}, {"name": "batch", "placement": "before_act"}, {"name": "default"}, SHAPE, 10
    )


def blocks(net: nn.Module) -> list[Stage]:
    return [m for m in net.features if isinstance(m, Stage)]


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_each_block_drops_whole_branches_per_sample_at_its_scheduled_rate(name):
    torch.manual_seed(0)
    p_last, n = 0.5, 2000
    net = build(p_last, name, **({"blocks": [1, 1, 2, 1]} if name == "resnet50" else {})).train()
    stages = blocks(net)
    L = len(stages)
    dropped = {}

    def check(stage, inputs, out):
        # the branch as the block computed it (train-mode BN: the same batch gives the same statistics)
        (x,) = inputs
        branch, shortcut = stage.convs(x), stage.shortcut(x)
        kept = out.ne(stage.post_act(shortcut)).flatten(1).any(1)
        # a kept sample's branch is scaled by 1 / (1 - p_l); a dropped one's is gone and its shortcut stays
        scale = kept.float().div(1 - stage.drop.p).view(-1, 1, 1, 1)
        torch.testing.assert_close(out, stage.post_act(branch * scale + shortcut))
        dropped[stage] = 1 - kept.float().mean().item()

    for s in stages:
        s.register_forward_hook(check)
    with torch.no_grad():
        net(torch.randn(n, *SHAPE))
    assert len(dropped) == L == (9 if name == "resnet20" else 5)
    for depth, s in enumerate(stages, 1):
        p = depth / L * p_last
        assert s.drop.p == pytest.approx(p)
        # fixed seed; 4 binomial standard deviations
        assert dropped[s] == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n)), (depth, dropped[s])


def test_drop_is_torchvisions_stochastic_depth_on_the_branch_only():
    torch.manual_seed(0)
    stage = blocks(build(0.5))[-1]
    assert isinstance(stage.drop, StochasticDepth) and (stage.drop.p, stage.drop.mode) == (0.5, "row")
    x = torch.randn(1000, 16, 2, 2)
    with torch.no_grad():
        out = stage.drop(x)
    zero = out.flatten(1).eq(0).all(1)
    # whole sample or nothing: every value of a sample is 0 or its input x 1 / (1 - p)
    torch.testing.assert_close(out[~zero], x[~zero] / 0.5)
    assert zero.float().mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / 1000))
    assert not any(m is stage.drop for m in stage.shortcut.modules())


def test_eval_drops_nothing_and_equals_the_net_without_it():
    torch.manual_seed(0)
    net, plain = build(0.9), build(0.0)
    assert all(b.drop is None for b in blocks(plain))  # the default builds the network of before, module for module
    plain.load_state_dict(net.state_dict())  # StochasticDepth has no parameters or buffers
    x = torch.randn(64, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), plain.eval()(x), rtol=0, atol=0)
        assert not torch.allclose(net.train()(x), plain.train()(x))  # control: in training it drops


@pytest.mark.parametrize(
    "options,start,allowed",
    [
        ({"stochastic_depth": 1.0}, "model.stochastic_depth=1.0", "a number in [0, 1)"),
        ({"stochastic_depth": -0.1}, "model.stochastic_depth=-0.1", "a number in [0, 1)"),
        ({"stochastic_depth": "half"}, "model.stochastic_depth='half'", "a number in [0, 1)"),
        ({"stochastic_depth": True}, "model.stochastic_depth=True", "a number in [0, 1)"),
        ({"stochastic_depth": 0.5, "skip": False}, "model.stochastic_depth=0.5", "model.skip=false has no residual"),
    ],
)
def test_bad_values_raise_one_line(options, start, allowed):
    with pytest.raises(ConfigError) as e:
        build_model(
            {"name": "resnet20", **options}, {"name": "relu"}, {"name": "batch"}, {"name": "default"}, SHAPE, 10
        )
    message = str(e.value)
    assert message.startswith(start) and allowed in message and "\n" not in message


@pytest.mark.parametrize("model", ["cnn", "vgg16"])
def test_on_other_models_raises(model):
    cfg = compose_cfg([f"model={model}", "trick=stochastic_depth"])
    with pytest.raises(ConfigError) as e:
        build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, SHAPE, 10)
    assert str(e.value).startswith(f"model.stochastic_depth=0.5: not an option of model={model}")


@pytest.mark.slow
def test_composes_with_other_tricks_and_trains(tmp_path, fmnist_mirror):
    tiny = [o for o in tiny_run_overrides(fmnist_mirror, root=tmp_path / "data") if not o.startswith("model.")]
    overrides = ["model=resnet20", "norm=batch", "model.width=4", "model.blocks=[1,1,1]", *tiny]
    cfg = compose_cfg([*overrides, "trick=[stochastic_depth,cosine,label_smoothing]"], tmp_path / "run")
    validate(cfg)
    assert (cfg.model.stochastic_depth, cfg.loss.label_smoothing) == (0.5, 0.1)
    assert cfg.scheduler.lr_scheduler._target_.endswith("CosineAnnealingLR")
    assert compose_cfg(["model=resnet20"]).model.stochastic_depth == 0.0  # off unless asked for
    results = run(cfg)
    assert results["status"] == "ok" and results["epochs"] == 1
