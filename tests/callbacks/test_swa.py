"""trick=swa (Lightning's StochasticWeightAveraging, as trickbench.callbacks.swa.SWA): the final weights are the mean of
the epoch-end weights Lightning averages, BatchNorm statistics are recomputed over the training data, a run resumed
mid-epoch ends bit for bit the same; bad values and a start inside the warmup are refused; the SWA lr is a fraction
of each param group's lr."""

import copy
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import compose_cfg, last_weights, run_with, tiny_run_overrides
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from trickbench.callbacks.swa import SWA, check_swa
from trickbench.errors import ConfigError

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log\\(\\)`", "ignore:SWA is currently only supported every epoch"
)

EPOCHS = 4
# swa_epoch_start=0.5: Lightning updates the average at the start of epochs int(0.5 x 4) = 2 to 4 (1-based), with the
# weights epochs 1 to 3 ended with; the last epoch's training is not in the average. 0-based:
AVERAGED_EPOCHS = [0, 1, 2]
SWA_RUN = [
    f"trainer.max_epochs={EPOCHS}",
    "model.channels=[2,4]",
    "optimizer=nesterov",  # lr 0.1, SWA lr 0.05: the weights move between snapshots
    "callbacks.swa.swa_epoch_start=0.5",
    "test_after_fit=false",
    "logger=csv",
    "+trainer.num_sanity_val_steps=0",
]


def clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


class Recorder(L.Callback):
    """The net's weights at every epoch end and at each validation, and the batches of the final pass (epoch EPOCHS,
    after on_after_batch_transfer: what the net sees)."""

    def __init__(self):
        self.epoch_end, self.validated, self.pass_batches = {}, {}, []
        self.params, self.net = [], None

    def on_train_start(self, trainer, module):
        self.params = [n for n, _ in module.net.named_parameters()]

    def on_train_epoch_end(self, trainer, module):
        self.epoch_end[trainer.current_epoch] = clone(module.net.state_dict())

    def on_validation_start(self, trainer, module):
        if not trainer.sanity_checking:
            self.validated[trainer.current_epoch] = clone(module.net.state_dict())

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == EPOCHS:
            self.pass_batches.append(batch[0].detach().clone())

    def on_train_end(self, trainer, module):
        self.net = copy.deepcopy(module.net)


class TermAt(L.Callback):
    """SIGTERM as Lightning's handler records it, at the start of (epoch, batch): the batch runs, then Lightning stops
    with SIGTERMException and CheckpointOnSigterm writes a mid-epoch last.ckpt."""

    def __init__(self, epoch: int, batch: int):
        self.at = (epoch, batch)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == self.at:
            trainer._signal_connector.received_sigterm = True


def swa_run(norm: str, mirror, tmp_path_factory) -> tuple:
    tmp = tmp_path_factory.mktemp(f"swa_{norm}")
    trick = "trick=swa" if norm == "none" else "trick=[swa,cosine,label_smoothing]"
    overrides = [*tiny_run_overrides(mirror, root=tmp / "data"), *SWA_RUN, trick, f"norm={norm}"]
    recorder = Recorder()
    results = run_with(overrides, tmp / "run", recorder)
    return overrides, tmp, results, recorder


@pytest.fixture(scope="module")
def plain_swa(fmnist_mirror, tmp_path_factory):
    return swa_run("none", fmnist_mirror, tmp_path_factory)


@pytest.fixture(scope="module")
def bn_swa(fmnist_mirror, tmp_path_factory):
    """With BatchNorm, through trick=[swa,cosine,label_smoothing]: SWA's lr takes over from the cosine schedule."""
    return swa_run("batch", fmnist_mirror, tmp_path_factory)


@pytest.mark.parametrize("run", ["plain_swa", "bn_swa"])
def test_swa_weights_are_the_mean_of_the_epoch_end_weights(run, request):
    _, tmp, results, rec = request.getfixturevalue(run)
    final = rec.net.state_dict()
    assert results["epochs"] == EPOCHS + 1  # the final pass counts as an epoch
    for name in rec.params:
        snapshots = torch.stack([rec.epoch_end[e][name].double() for e in AVERAGED_EPOCHS])
        torch.testing.assert_close(final[name].double(), snapshots.mean(0), rtol=1e-6, atol=1e-7)
        assert not torch.allclose(snapshots[0], snapshots[-1])  # the weights moved between snapshots
        assert not torch.allclose(final[name], rec.epoch_end[EPOCHS - 1][name])  # the last epoch is not averaged
    # the average, not the last epoch's weights, is validated last and saved (for nets without BatchNorm too: Lightning
    # alone would copy it in after the last validation and checkpoint)
    saved = last_weights(tmp / "run")
    for name, value in final.items():
        torch.testing.assert_close(rec.validated[EPOCHS][name], value, rtol=0, atol=0)
        torch.testing.assert_close(saved[f"net.{name}"], value, rtol=0, atol=0)


def test_swa_recomputes_batchnorm_statistics_in_one_pass_over_the_training_data(bn_swa):
    rec = bn_swa[3]
    assert len(rec.pass_batches) == 3  # the whole (limited) epoch, trainer.limit_train_batches=3
    fresh = copy.deepcopy(rec.net).train()
    bns = {n: m for n, m in fresh.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert bns
    for m in bns.values():
        m.reset_running_stats()
        m.momentum = None  # a plain mean over the batches, as torch.optim.swa_utils.update_bn
    with torch.no_grad():
        for x in rec.pass_batches:
            fresh(x)
    final, last_epoch = rec.net.state_dict(), rec.epoch_end[EPOCHS - 1]
    for name, m in bns.items():
        assert rec.net.get_submodule(name).momentum == 0.1  # norm.momentum again after the pass
        assert int(final[f"{name}.num_batches_tracked"]) == 3
        for stat in ("running_mean", "running_var"):
            key = f"{name}.{stat}"
            torch.testing.assert_close(final[key], getattr(m, stat), rtol=1e-5, atol=1e-6)
            assert not torch.allclose(final[key], last_epoch[key], rtol=1e-3)  # not the training run's statistics


def test_swa_run_stopped_mid_epoch_twice_resumes_to_the_same_weights(bn_swa):
    # Lightning calls on_train_epoch_start, where SWA sets up its lr schedule and its final pass, only for epochs it
    # starts, not for one it resumes: stopped in the first SWA epoch, then in the BatchNorm pass
    overrides, tmp, _, _ = bn_swa
    out = tmp / "stopped"
    for epoch, steps in ((1, 3 + 2), (EPOCHS, 3 * EPOCHS)):  # the pass takes no optimizer step
        with pytest.raises(SIGTERMException):
            run_with(overrides, out, TermAt(epoch, 1))
        assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == steps
    run_with(overrides, out)  # finds last.ckpt and resumes
    resumed, whole = last_weights(out), last_weights(tmp / "run")
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


@pytest.fixture(scope="module")
def swa_node() -> dict:
    return dict(compose_cfg(["trick=swa"]).callbacks.swa)


@pytest.mark.parametrize(
    "key,value",
    [
        ("swa_epoch_start", 1),  # epoch 1: the random init would be averaged
        ("swa_epoch_start", 0.1),  # int(0.1 x 10) = 1: the same
        ("swa_epoch_start", 11),  # after the run: the untrained weights come back at the end
        ("swa_epoch_start", 1.5),
        ("swa_lrs", -0.1),
        ("swa_lr_factor", 0),
        ("annealing_epochs", -1),
        ("annealing_strategy", "step"),
    ],
)
def test_bad_swa_values_are_one_line_config_errors(key, value, swa_node):
    node = swa_node | {key: value}
    with pytest.raises(ConfigError) as err:
        check_swa(node, max_epochs=10)
    assert str(err.value).startswith(f"callbacks.swa.{key}=")
    callback = instantiate(node)  # Lightning's own checks would raise here, as a traceback through instantiate
    with pytest.raises(ConfigError):
        callback.setup(SimpleNamespace(max_epochs=10), None, "fit")


def test_swa_start_inside_the_warmup_is_refused(swa_node):
    node = swa_node
    check_swa(node, max_epochs=10, warmup_epochs=6)  # 0.75 x 10: averaging from epoch 7 (0-based 6)
    with pytest.raises(ConfigError, match="warmup"):
        check_swa(node, max_epochs=10, warmup_epochs=7)


def test_swa_lr_is_a_fraction_of_each_param_groups_lr():
    cfg = compose_cfg(["trick=swa"])
    callback = instantiate(cfg.callbacks.swa)
    assert isinstance(callback, SWA) and cfg.callbacks.swa.swa_lr_factor == 0.5
    net = nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": [net.weight]}, {"params": [net.bias], "lr": 0.4}], lr=0.1)
    torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=5)  # a warmup starts low
    trainer = L.Trainer(max_epochs=10, logger=False, enable_checkpointing=False)
    trainer.strategy.optimizers = [optimizer]
    callback.on_fit_start(trainer, nn.Module())
    assert callback._swa_lrs == pytest.approx([0.05, 0.2])
