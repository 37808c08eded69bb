"""trick=sam (tricks/sam.py): one optimizer step is the configured optimizer's step from w with the gradient at
w + rho g / ||g||, the training metrics count the first pass only, and it composes with other tricks."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_cfg, tiny_run_overrides
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trickbench.config.validate import validate
from trickbench.errors import ConfigError
from trickbench.module import TrickModule
from trickbench.train import build_step_tricks, run
from trickbench.tricks.sam import SAM

LR, RHO = 0.5, 0.2


def one_step(tricks: list, x, y, w0: nn.Linear) -> tuple[nn.Linear, dict]:
    """The weights after one Trainer step of SGD (lr LR) from w0's weights on the batch (x, y)."""
    net = nn.Linear(x.shape[1], 3)
    net.load_state_dict(w0.state_dict())
    module = TrickModule(
        net,
        nn.CrossEntropyLoss(),
        3,
        optimizer=lambda m, replicas: torch.optim.SGD(m.parameters(), lr=LR),
        step_tricks=tricks,
    )
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=tricks,
        accelerator="cpu",
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=len(y)))
    return net, {k: float(v) for k, v in trainer.callback_metrics.items()}


def gradient(w0: nn.Linear, x, y, offset=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss and the gradients of weight and bias at w0's weights (+ offset)."""
    weight, bias = (p.detach().clone().requires_grad_() for p in (w0.weight, w0.bias))
    if offset is not None:
        weight, bias = (p + e for p, e in zip((weight, bias), offset, strict=True))
        weight.retain_grad(), bias.retain_grad()
    loss = F.cross_entropy(F.linear(x, weight, bias), y)
    loss.backward()
    return loss.detach(), weight.grad, bias.grad


def test_sam_steps_with_the_gradient_at_the_perturbed_weights():
    torch.manual_seed(0)
    x, y, w0 = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), nn.Linear(4, 3)
    loss0, gw, gb = gradient(w0, x, y)
    scale = RHO / torch.sqrt(gw.square().sum() + gb.square().sum())  # ||g|| over every parameter together
    _, gw_sam, gb_sam = gradient(w0, x, y, offset=(scale * gw, scale * gb))

    plain, _ = one_step([], x, y, w0)
    sam, metrics = one_step([SAM(RHO)], x, y, w0)
    torch.testing.assert_close(plain.weight, w0.weight - LR * gw)
    torch.testing.assert_close(sam.weight, w0.weight - LR * gw_sam)
    torch.testing.assert_close(sam.bias, w0.bias - LR * gb_sam)
    assert (sam.weight - plain.weight).abs().max() > 1e-3  # the perturbation changed the step
    # the training loss and accuracy count the step's first pass only, at w0
    assert metrics["train/loss"] == pytest.approx(float(loss0), rel=1e-5)
    acc = float((F.linear(x, w0.weight, w0.bias).argmax(1) == y).float().mean())
    assert metrics["train/acc"] == pytest.approx(acc)


def test_sam_composes_with_other_tricks_and_trains(fmnist_mirror, tmp_path):
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "trick=[sam,cosine,label_smoothing]"]
    cfg = compose_cfg(overrides, tmp_path / "run")
    validate(cfg)
    assert [type(t).__name__ for t in build_step_tricks(cfg)] == ["SAM"] and cfg.step.sam.rho == 0.05
    assert (cfg.scheduler.lr_scheduler._target_.endswith("CosineAnnealingLR"), cfg.loss.label_smoothing) == (True, 0.1)
    assert run(cfg)["status"] == "ok"


@pytest.mark.parametrize(
    "override,words",
    [
        ("step.sam.rho=0", "a number > 0"),
        ("+trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches=1"),
        ("trainer.precision=16-mixed", "without a gradient scaler"),
    ],
)
def test_sam_refuses_what_it_cannot_do_in_one_line(override, words):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(["trick=sam", override]))
    assert str(err.value).startswith("step.sam.rho=") and words in str(err.value) and "\n" not in str(err.value)
