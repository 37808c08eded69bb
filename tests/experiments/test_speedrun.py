"""experiment=speedrun/cifar10: its values are airbench94's, converted to a loss averaged over the batch; on a CPU
subset it composes, trains with every part of the recipe, and validates and tests through flip+translate test-time
augmentation."""

import pytest
from conftest import compose_cfg, composed

import trickbench.module as module_file
from trickbench.config.validate import validate
from trickbench.train import run


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


def test_speedrun_preset_trains_on_a_cpu_subset(cifar_tarball, tmp_path, monkeypatch):
    modes = []
    real = module_file.tta_logits
    monkeypatch.setattr(module_file, "tta_logits", lambda net, x, mode: modes.append(mode) or real(net, x, mode))
    overrides = [
        "experiment=speedrun/cifar10",
        f"data.source={cifar_tarball}",
        f"data.root={tmp_path / 'data'}",
        "data.subset=160",
        "data.val_size=40",
        "data.batch_size=32",
        "data.eval_batch_size=40",
        "model.widths=[8,16,16]",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "scheduler.warmup_epochs=1",
        "callbacks.lookahead.start_epoch=0",
        "callbacks.lookahead.every_n_steps=2",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "compile=eager",  # inductor's compile takes minutes on 2 cores; the eager backend runs the same wrapping
    ]
    results = run(compose_cfg(overrides, tmp_path / "run"))
    assert results["status"] == "ok" and results["epochs"] == 2
    assert results["dataset"] == "cifar10" and 0 <= results["test"]["acc"] <= 1
    assert results["speed"]["precision"] == "bf16-mixed" and results["speed"]["channels_last"] is True
    assert results["speed"]["compile"] == "eager" and results["timing"]["val_s"] > 0
    # validation once (after the last epoch: check_val_every_n_epoch = max_epochs) and the test, both through TTA;
    # the sanity check's 2 val batches go through it too
    assert modes and set(modes) == {"flip_translate"}
