"""The lecture's recipe for choosing hyperparameters, one command per step: the first loss against ln(classes), debug=
overfit on two fixed batches, tune=lr_find, and transfer learning (model.init_from, model.freeze_backbone)."""

import json
import logging
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import ROOT, compose_cfg, tiny_run_overrides
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from trickbench import train
from trickbench.callbacks import DivergenceGuard, FirstLossCheck
from trickbench.config.validate import validate
from trickbench.errors import ConfigError
from trickbench.models import build_model
from trickbench.module import build_module
from trickbench.train import run

FMNIST = ROOT.parent / "shared" / "datasets" / "fashion-mnist"


def warnings_from(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


def infos_from(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.INFO]


# ---- step 1: the first loss -------------------------------------------------------------------------------------
def _first_loss_run(tmp_path, mirror, monkeypatch, scale: float | None) -> FirstLossCheck:
    made = []

    def callbacks(cfg):
        made.extend(original(cfg))
        return made

    def scaled_build(*args, **kwargs):
        net = build_model(*args, **kwargs)
        if scale is not None:  # a deliberately mis-scaled init: the classifier's weights x scale
            with torch.no_grad():
                net.head[-1].weight.mul_(scale)
        return net

    original = train._callbacks
    monkeypatch.setattr(train, "_callbacks", callbacks)
    monkeypatch.setattr(train, "build_model", scaled_build)
    cfg = compose_cfg([*tiny_run_overrides(mirror, root=tmp_path / "data"), "test_after_fit=false"], tmp_path / "run")
    assert run(cfg)["status"] == "ok"
    return next(c for c in made if isinstance(c, FirstLossCheck))


def test_first_loss_check_is_quiet_on_the_default_init(tmp_path, fmnist_mirror, monkeypatch, caplog):
    with caplog.at_level(logging.INFO):
        check = _first_loss_run(tmp_path, fmnist_mirror, monkeypatch, scale=None)
    assert check.factor == 2.0  # conf/callbacks/default.yaml
    assert abs(check.first_loss / math.log(10) - 1) < 0.1  # an untrained classifier: about ln(10)
    assert not warnings_from(caplog, "trickbench.callbacks.monitors")


def test_first_loss_check_names_the_init_scale_when_logits_start_too_large(
    tmp_path, fmnist_mirror, monkeypatch, caplog
):
    with caplog.at_level(logging.INFO):
        check = _first_loss_run(tmp_path, fmnist_mirror, monkeypatch, scale=300.0)
    assert check.first_loss > 2 * math.log(10)
    warned = warnings_from(caplog, "trickbench.callbacks.monitors")
    assert len(warned) == 1 and "\n" not in warned[0], warned  # once, in one line
    assert warned[0].startswith(f"first loss {check.first_loss:.3g} is ")
    assert "x ln(10 classes) = 2.3" in warned[0] and "init scale (init=default, norm=none" in warned[0]
    assert "inputs not normalized (data.normalize=none" in warned[0]


def test_first_loss_check_names_a_label_bug_when_the_loss_starts_too_low(caplog):
    cfg = compose_cfg(["callbacks.first_loss.factor=1.5"])
    check = instantiate(cfg.callbacks.first_loss)
    module = SimpleNamespace(step_tricks=[])  # no hparams: the check's hints are its own arguments
    trainer = SimpleNamespace(
        current_epoch=0, global_step=1, is_global_zero=True, datamodule=SimpleNamespace(num_classes=10)
    )
    with caplog.at_level(logging.WARNING):
        check.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0)}, None, 0)  # 0.43 x ln(10)
        check.on_train_batch_end(trainer, module, {"loss": torch.tensor(9.0)}, None, 0)  # read once only
    (warned,) = warnings_from(caplog, "trickbench.callbacks.monitors")
    assert "(expected within 1.5 x): the net predicts the labels before any training" in warned
    assert "label bug" in warned and check.first_loss == 1.0
    with pytest.raises(ConfigError, match=r"^callbacks.first_loss.factor=0.5: a number > 1"):
        validate(compose_cfg(["callbacks.first_loss.factor=0.5"]))


# ---- step 2: debug=overfit ------------------------------------------------------------------------------------
class BatchRecorder(L.Callback):
    """The labels of every training batch, per epoch (+callbacks.recorder._target_=test_workflow.BatchRecorder)."""

    last: "BatchRecorder | None" = None

    def __init__(self):
        self.epochs: dict[int, list[tuple[int, ...]]] = {}
        BatchRecorder.last = self

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs.setdefault(trainer.current_epoch, []).append(tuple(batch[1].tolist()))


@pytest.mark.skipif(not FMNIST.is_dir(), reason=f"no Fashion-MNIST copy at {FMNIST}")
def test_debug_overfit_reaches_full_train_accuracy_on_two_fashion_mnist_batches(tmp_path, caplog):
    overrides = [
        "debug=overfit",
        f"data.source={FMNIST}",
        f"data.root={tmp_path / 'data'}",
        "data.subset=1000",
        "data.val_size=200",
        "data.batch_size=32",
        "data.eval_batch_size=100",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "model=mlp",  # a few seconds on a CPU; 2 batches of a small CNN take minutes there
        "model.hidden=[64]",
        "optimizer.lr=3e-3",
        "+callbacks.recorder._target_=test_workflow.BatchRecorder",
    ]
    cfg = compose_cfg(overrides, tmp_path / "run")
    assert cfg.task_name == "debug" and cfg.trainer.overfit_batches == 2
    assert HydraConfig.get().runtime.choices["augment"] == "none"
    with caplog.at_level(logging.INFO):
        results = run(cfg)
    assert results["train"]["acc_last"] == 1.0
    assert 1 < results["epochs"] < cfg.trainer.max_epochs  # stopped by the threshold, not by max_epochs
    batches = BatchRecorder.last.epochs
    assert len(batches) == results["epochs"] and all(b == batches[0] for b in batches.values())  # fixed batches
    assert len(batches[0]) == 2 and len(set(batches[0])) == 2 and len(batches[0][0]) == 32
    (said,) = [m for m in infos_from(caplog, "trickbench.callbacks.overfit")]
    assert said.startswith(
        f"debug=overfit: train acc 1.0000 > 0.999 on 2 fixed batches after {results['epochs']} epochs"
    )
    assert results["test"]["acc"] is None  # test_after_fit=false: the test set says nothing here


# ---- step 3: tune=lr_find --------------------------------------------------------------------------------------
def test_lr_find_writes_its_plot_and_a_finite_suggestion_then_stops(tmp_path, fmnist_mirror, caplog):
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "tune=lr_find", "tune.num_training=30"]
    with caplog.at_level(logging.INFO):
        results = run(compose_cfg(overrides, tmp_path / "run"))
    found = json.loads((tmp_path / "run" / "lr_find.json").read_text())
    assert (tmp_path / "run" / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lr = found["suggestion"]
    assert math.isfinite(lr) and 1e-6 <= lr <= 1.0 and found["steps"] >= 13
    assert results["lr_find"]["override"] == found["override"] == f"optimizer.lr={lr:.3g}"
    assert any(
        m.startswith(f"lr_find: suggested optimizer.lr={lr:.3g}: rerun")
        for m in infos_from(caplog, "trickbench.tuning")
    )
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_lr_find_apply_trains_with_the_suggestion_from_a_rebuilt_module(tmp_path, fmnist_mirror, monkeypatch):
    overrides = [
        *tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"),
        "model.dropout=0.3",  # a random draw in every step: the finder's steps must not shift the run's draws
        "tune=lr_find",
        "tune.num_training=20",
        "tune.apply=true",
        "test_after_fit=false",
    ]
    built, made = [], []  # each module as built (its initial weights, its config's lr); each build's callbacks

    def recording_build(cfg, net, *args, **kwargs):
        module = build_module(cfg, net, *args, **kwargs)
        built.append(({k: v.clone() for k, v in module.state_dict().items()}, module.hparams["config"]))
        return module

    def recording_callbacks(cfg):
        made.append(original_callbacks(cfg))
        return made[-1]

    original_callbacks = train._callbacks
    monkeypatch.setattr(train, "build_module", recording_build)
    monkeypatch.setattr(train, "_callbacks", recording_callbacks)
    results = run(compose_cfg(overrides, tmp_path / "run"))
    found = json.loads((tmp_path / "run" / "lr_find.json").read_text())
    assert found["applied"] and results["lr"] == float(f"{found['suggestion']:.3g}")
    (first, first_config), (rebuilt, rebuilt_config) = built  # the finder's module, then the one fit trained
    assert first.keys() == rebuilt.keys() and all(torch.equal(first[k], rebuilt[k]) for k in first)  # seed, init
    assert (first_config["optimizer"]["lr"], rebuilt_config["optimizer"]["lr"]) == (1e-3, results["lr"])
    guard = next(c for c in made[-1] if isinstance(c, DivergenceGuard))
    assert guard.lr == results["lr"]  # a callback interpolating optimizer.lr is built again with it
    ckpt = torch.load(results["checkpoints"]["last"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["config"]["optimizer"]["lr"] == results["lr"]  # what resume= and eval.py see
    assert results["epochs"] == 1 and results["status"] == "ok"
    fresh = compose_cfg([*overrides[:-4], f"optimizer.lr={results['lr']}", "test_after_fit=false"], tmp_path / "b")
    assert run(fresh)["train"] == results["train"]  # the run optimizer.lr=<suggestion> is, step for step


def test_tune_values_are_checked():
    with pytest.raises(ConfigError, match=r"^tune.max_lr=1e-07: a number above tune.min_lr=1e-06$"):
        validate(compose_cfg(["tune=lr_find", "tune.max_lr=1e-7"]))


# ---- transfer learning ------------------------------------------------------------------------------------------
def test_fine_tuning_loads_matching_layers_and_trains_only_the_head(tmp_path, fmnist_mirror, monkeypatch, caplog):
    base = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "norm=batch", "test_after_fit=false"]
    pre = run(compose_cfg([*base, "data.split_seed=0"], tmp_path / "pre"))
    pre_state = torch.load(pre["checkpoints"]["last"], map_location="cpu", weights_only=True)["state_dict"]

    built = {}

    def keep_built(*args, **kwargs):
        net = build_model(*args, **kwargs)
        built.update({k: v.clone() for k, v in net.state_dict().items()})
        return net

    monkeypatch.setattr(train, "build_model", keep_built)
    fine_overrides = [
        *base,
        "data.split_seed=1",  # another subset of the train set
        "model.head=[32]",  # a new head: its tensors' shapes differ from the checkpoint's
        f"model.init_from={pre['checkpoints']['last']}",
        "model.freeze_backbone=true",
    ]
    with caplog.at_level(logging.INFO):
        fine = run(compose_cfg(fine_overrides, tmp_path / "fine"))
    state = torch.load(fine["checkpoints"]["last"], map_location="cpu", weights_only=True)["state_dict"]
    features = [k for k in state if k.startswith("net.features.")]
    head = [k for k in state if k.startswith("net.head.")]
    assert any("running_mean" in k for k in features) and any("running_mean" in k for k in head)
    for k in features:  # loaded, then frozen: weights and batch-norm statistics as pre-trained
        assert torch.equal(state[k], pre_state[k]), k
        assert torch.equal(built[k.removeprefix("net.")], pre_state[k]), k
    assert all(not torch.equal(state[k], built[k.removeprefix("net.")]) for k in head)  # the head trained
    (loaded,) = [m for m in infos_from(caplog, "trickbench.models.transfer") if m.startswith("model.init_from=")]
    assert f"loaded {len(features) + 2} of {len(state)} tensors" in loaded  # + the last layer's bias, and BN's count
    assert "skipped (shape differs): head.1.layers.0.weight (16, 392)->(32, 392), head.1.layers.1.weight " in loaded
    assert "head.2.weight (10, 16)->(10, 32); not in the checkpoint: none" in loaded
    (frozen,) = [m for m in infos_from(caplog, "trickbench.models.transfer") if m.startswith("model.freeze_")]
    head_params = 392 * 32 + 2 * 32 + 32 * 10 + 10  # Linear (no bias before BN), BN, Linear
    assert frozen.startswith(f"model.freeze_backbone=true: training {head_params} of ")


@pytest.mark.parametrize(
    "model,options",
    [
        ("resnet20", ["model.width=4", "model.blocks=[1,1,1]", "norm=batch"]),
        ("speednet", ["model.widths=[8,8]", "model.whiten=false"]),
        ("mlp", ["model.hidden=[16]", "norm=batch"]),
        ("lenet5", ["norm=batch"]),
    ],
)
def test_freeze_backbone_trains_only_the_models_head(model, options):
    cfg = compose_cfg([f"model={model}", *options, "model.freeze_backbone=true"])
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, (3, 16, 16), 10)
    head = {id(p) for p in net.head.parameters()}
    assert head and all(p.requires_grad == (id(p) in head) for p in net.parameters())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net.train()
    torch.nn.functional.cross_entropy(net(torch.randn(8, 3, 16, 16)), torch.arange(8)).backward()
    optimizer.step()
    after = net.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("head.") for k in changed), changed  # norm statistics stay too


def test_bad_init_from_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^model.init_from='nope.ckpt': null or an existing .ckpt file"):
        validate(compose_cfg(["model.init_from=nope.ckpt"]))
    cfg = compose_cfg([])
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, other)  # another program's checkpoint
    with pytest.raises(ConfigError, match=r"^model.init_from='.*other.ckpt': a checkpoint written by train.py"):
        build_model(
            OmegaConf.merge(cfg.model, {"init_from": str(other)}), cfg.activation, cfg.norm, cfg.init, (1, 28, 28), 10
        )
    unrelated = tmp_path / "unrelated.ckpt"
    stored = {"config": OmegaConf.to_container(cfg, resolve=False) | {"model": {"name": "mlp"}}, "num_classes": 10}
    torch.save({"hyper_parameters": stored, "state_dict": {"net.x.weight": torch.zeros(2)}}, unrelated)
    with pytest.raises(ConfigError, match=r"sharing layers \(names and shapes\) with this model; it holds mlp$"):
        build_model(
            OmegaConf.merge(cfg.model, {"init_from": str(unrelated)}),
            cfg.activation,
            cfg.norm,
            cfg.init,
            (1, 28, 28),
            10,
        )
    with pytest.raises(ConfigError, match=r"^model.freeze_backbone='yes': true or false$"):
        validate(compose_cfg(["model.freeze_backbone=yes"]))


# ---- debug=profile ----------------------------------------------------------------------------------------------
def test_debug_profile_writes_its_summary_in_the_run_folder(tmp_path, fmnist_mirror):
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "debug=profile", "test_after_fit=false"]
    run(compose_cfg(overrides, tmp_path / "run"))
    summary = (tmp_path / "run" / "fit-profile.txt").read_text()
    assert "run_training_batch" in summary and "Total" in summary
