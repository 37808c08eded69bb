"""trick=lookahead (callbacks/lookahead.py, the speedrun's Lookahead callback): the update math by hand, waiting for its
epoch and for optimizer steps, its state round trip, bad values refused before any data, and a killed and resumed
run that ends as an uninterrupted one."""

import io
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import compose_cfg
from torch import nn
from torch.nn import functional as F

from trickbench.callbacks.lookahead import Lookahead
from trickbench.config.validate import validate
from trickbench.errors import ConfigError


def fake_trainer(**kw) -> SimpleNamespace:
    defaults = {"global_step": 0, "current_epoch": 0, "num_training_batches": 100, "estimated_stepping_batches": 10}
    return SimpleNamespace(**{**defaults, "max_epochs": 10, **kw})


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.bn = nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1)


def set_weights(net: Tiny, w: float) -> None:
    with torch.no_grad():
        net.lin.weight.fill_(w)
        net.bn.running_mean.fill_(w)


def run_steps(callback: Lookahead, module, steps: dict[int, float], epoch_batches: int = 100) -> list[float]:
    """Sets the weight to steps[t] as if optimizer step t had produced it, then calls the hook; returns w after."""
    after = []
    for t, w in steps.items():
        set_weights(module.net, w)
        trainer = fake_trainer(global_step=t, num_training_batches=epoch_batches)
        callback.on_train_batch_end(trainer, module, None, None, (t - 1) % epoch_batches)
        after.append(module.net.lin.weight.item())
    return after


def test_lookahead_math_by_hand():
    module = SimpleNamespace(net=Tiny())
    callback = Lookahead(start_epoch=0, every_n_steps=2, decay_base=0.9, decay_power=1.0)
    callback.setup(fake_trainer(), module, "fit")
    callback.on_train_start(fake_trainer(), module)
    # step 2: avg = w; step 4: decay 0.9^2 x 4/10 = 0.324, avg = 2 + 0.676 x (6 - 2) = 4.704, w = avg;
    # step 6: decay 0.81 x 0.6 = 0.486, avg = 4.704 + 0.514 x (10 - 4.704) = 7.426144; step 7 ends the epoch: w = avg
    after = run_steps(callback, module, {1: 1.0, 2: 2.0, 3: 5.0, 4: 6.0, 5: 7.0, 6: 10.0, 7: 9.0}, epoch_batches=7)
    assert after == pytest.approx([1.0, 2.0, 5.0, 4.704, 7.0, 7.426144, 7.426144])
    assert module.net.bn.running_mean.item() == pytest.approx(7.426144)  # buffers are averaged too
    assert module.net.bn.num_batches_tracked.item() == 0  # integer buffers are not


def test_lookahead_waits_for_its_epoch_and_for_optimizer_steps():
    module = SimpleNamespace(net=Tiny())
    callback = Lookahead(start_epoch=1, every_n_steps=1)
    callback.on_train_start(fake_trainer(), module)
    run_steps(callback, module, {1: 1.0, 2: 2.0})  # epoch 0: nothing
    assert callback.state_dict() == {"average": None}
    set_weights(module.net, 3.0)
    for batch_idx in range(2):  # two accumulated batches, one optimizer step: one update
        callback.on_train_batch_end(fake_trainer(global_step=3, current_epoch=1), module, None, None, batch_idx)
    assert callback.state_dict()["average"]["lin.weight"].item() == 3.0


def test_lookahead_state_round_trips():
    module, steps = SimpleNamespace(net=Tiny()), {t: float(t * t) for t in range(1, 9)}
    first = Lookahead(start_epoch=0, every_n_steps=2)
    first.on_train_start(fake_trainer(), module)
    run_steps(first, module, dict(list(steps.items())[:5]))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second, module2 = Lookahead(start_epoch=0, every_n_steps=2), SimpleNamespace(net=Tiny())
    second.load_state_dict(torch.load(buffer))
    second.on_train_start(fake_trainer(global_step=5), module2)
    assert all(torch.equal(a, b) for a, b in zip(first._average.values(), second._average.values(), strict=True))
    rest = dict(list(steps.items())[5:])
    assert run_steps(first, module, rest) == run_steps(second, module2, rest)


@pytest.mark.parametrize(
    "override, error",
    [
        ("callbacks.lookahead.start_epoch=10", r"^callbacks.lookahead.start_epoch=10: less than trainer.max_epochs=10"),
        (
            "callbacks.lookahead.start_epoch=0.97",
            r"^callbacks.lookahead.start_epoch=0.97: less than trainer.max_epochs",
        ),
        ("callbacks.lookahead.decay_base=1.0", r"^callbacks.lookahead.decay_base=1.0: a number in \[0, 1\)"),
        ("callbacks.lookahead.every_n_steps=0", r"^callbacks.lookahead.every_n_steps=0: an integer >= 1"),
    ],
)
def test_lookahead_bad_values_fail_before_any_data(override, error):
    cfg = compose_cfg(["trick=lookahead", "trainer.max_epochs=10", override])
    with pytest.raises(ConfigError, match=error):
        validate(cfg)


class Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def fit(epochs: int, ckpt_dir, resume_from=None) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    torch.manual_seed(1 if resume_from else 0)  # a resumed run starts from other weights: the checkpoint must fix them
    model = Regression()
    save = L.pytorch.callbacks.ModelCheckpoint(ckpt_dir, filename="{epoch}", save_top_k=-1)
    lookahead = Lookahead(start_epoch=1, every_n_steps=2, decay_power=1.0)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        callbacks=[lookahead, save],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data, ckpt_path=resume_from)
    return model.net


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = fit(4, tmp_path / "whole")  # 5 steps per epoch: an update every 2 steps, an epoch-end copy in between
    resumed = fit(4, tmp_path / "resumed", resume_from=tmp_path / "whole" / "epoch=1.ckpt")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
