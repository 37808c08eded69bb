"""torch.compile computes the step the eager net computes: a few SGD steps of small nets of the project's compiled
paths (compile=true on any net; the speedrun preset's speednet with its whitening, frozen filters, BatchNorm eps 1e-12
and global max-pool), compiled with inductor and eager, in fp32 and in bf16 autocast on the CPU: the same losses
within the precision's tolerance, and the same gradients. Before the fix, speednet's compiled bf16 gradients were
NaN from the first step (amax's backward, see models/speednet.py's GlobalMaxPool)."""

import copy

import pytest
import torch
from conftest import compose_cfg
from torch.nn import functional as F

from trickbench.models import build_model

NETS = {
    # one block each: the layers of the full nets, fewer kernels for inductor to build (minutes on 2 cores otherwise)
    "speednet": ["experiment=speedrun/cifar10", "model.widths=[16]"],
    "cnn": ["data=cifar10", "norm=batch", "model.channels=[16]", "model.head=[16]"],
}
STEPS = 3
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2}  # bf16 keeps 8 bits of mantissa: ~0.4% per rounding


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)


def losses_and_grads(net, compiled: bool, bf16: bool) -> tuple[list[float], dict]:
    net = copy.deepcopy(net)
    if compiled:
        net.compile(backend="inductor")  # as speed.prepare_model does
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
    x, y = batch()
    losses, first_grads = [], None
    for _ in range(STEPS):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if first_grads is None:  # later steps start from weights that already differ by rounding
            first_grads = torch.cat([p.grad.flatten().float() for p in params])
        opt.step()
        losses.append(loss.item())
    return losses, first_grads


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_step_equals_the_eager_one(name, precision):
    torch.manual_seed(0)
    cfg = compose_cfg([*NETS[name], "trainer.accelerator=cpu"])
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, (3, 32, 32), 10)
    if hasattr(net, "init_from_data"):
        net.init_from_data(batch(1)[0])
    net = net.to(memory_format=torch.channels_last) if cfg.model.channels_last else net
    bf16 = precision == "bf16"
    eager, eager_grads = losses_and_grads(net, compiled=False, bf16=bf16)
    compiled, compiled_grads = losses_and_grads(net, compiled=True, bf16=bf16)
    assert torch.isfinite(compiled_grads).all(), "NaN or inf in a compiled gradient"
    assert compiled == pytest.approx(eager, rel=TOLERANCE[precision]), (compiled, eager)
    assert eager[-1] < eager[0]  # the steps train: a net that does not move would agree vacuously
    # the whole first gradient (a single BN bias sums many terms that cancel: its own error is mostly rounding)
    rel = ((compiled_grads - eager_grads).norm() / eager_grads.norm()).item()
    print(f"{name} {precision}: losses {eager} / {compiled}, first-gradient difference {rel:.2e}")
    assert rel < TOLERANCE[precision], f"relative difference of the first gradient {rel:.2e}"
