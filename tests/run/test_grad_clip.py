"""trick=grad_clip (the Trainer's gradient norm clipping): every optimizer step uses a gradient norm of at most the
limit, and bad values are one-line config errors."""

import lightning as L
import pytest
import torch
from conftest import compose_cfg, run_with, tiny_run_overrides

from trickbench.config.validate import validate
from trickbench.errors import ConfigError

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log\\(\\)`", "ignore:SWA is currently only supported every epoch"
)


class StepNorms(L.Callback):
    """Per optimizer step: the total gradient norm before clipping (on_before_optimizer_step, which Lightning calls
    before it clips), the norm of the gradients the step used (an optimizer post-hook: the step leaves .grad alone) and
    the norm of the weights' change (plain SGD: lr x that gradient)."""

    def __init__(self):
        self.raw, self.stepped, self.moved = [], [], []

    @staticmethod
    def _norm(tensors) -> float:
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.double()) for t in tensors])))

    def on_train_start(self, trainer, module):
        optimizer = trainer.optimizers[0]
        params = [p for g in optimizer.param_groups for p in g["params"]]
        before = {}

        def pre(opt, args, kwargs):  # runs before the closure (forward, backward, clipping): weights only
            before["w"] = [p.detach().clone() for p in params]

        def post(opt, args, kwargs):
            self.stepped.append(self._norm([p.grad for p in params if p.grad is not None]))
            self.moved.append(self._norm([p.detach() - w for p, w in zip(params, before["w"], strict=True)]))

        optimizer.register_step_pre_hook(pre)
        optimizer.register_step_post_hook(post)

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.raw.append(self._norm([p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]))


def test_grad_clip_bounds_the_gradient_norm_of_every_step(fmnist_mirror, tmp_path):
    lr = 20.0  # high: some raw norms exceed the limit
    overrides = [
        *tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"),
        "trick=grad_clip",
        "optimizer=sgd",  # no momentum, no weight decay: the step is -lr x gradient
        f"optimizer.lr={lr}",
        "trainer.max_epochs=2",
        "model.channels=[2,4]",
        "test_after_fit=false",
        "logger=csv",
    ]
    cfg = compose_cfg(overrides, tmp_path / "run")
    limit = cfg.trainer.gradient_clip_val
    assert (limit, cfg.trainer.gradient_clip_algorithm) == (1.0, "norm")
    norms = StepNorms()
    run_with(overrides, tmp_path / "run", norms)
    assert len(norms.raw) == len(norms.stepped) == len(norms.moved) == 6
    assert any(r > limit for r in norms.raw) and any(r < limit for r in norms.raw)  # clipped and untouched steps
    for raw, stepped, moved in zip(norms.raw, norms.stepped, norms.moved, strict=True):
        assert stepped <= limit * (1 + 1e-6)
        assert stepped == pytest.approx(min(raw, limit), rel=1e-5)  # scaled to the limit, or left alone
        assert moved / lr == pytest.approx(stepped, rel=1e-4)  # the optimizer stepped with these gradients


@pytest.mark.parametrize(
    "key,value", [("gradient_clip_val", -1.0), ("gradient_clip_val", 0), ("gradient_clip_algorithm", "l2")]
)
def test_bad_grad_clip_values_are_one_line_config_errors(key, value):
    # Lightning takes a value <= 0 as "off" without a word, and refuses a bad algorithm only with a traceback
    with pytest.raises(ConfigError):
        validate(compose_cfg(["trick=grad_clip", f"trainer.{key}={value}"]))
