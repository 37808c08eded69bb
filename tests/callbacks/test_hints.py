"""Callbacks take what their hints name as their own arguments (interpolated in conf/callbacks/), never by reading
the run's config back from the module (pl_module.hparams)."""

import ast
import logging
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, compose_cfg
from hydra.utils import instantiate

from trickbench.errors import ConfigError, Diverged

CALLBACKS = ROOT / "src" / "trickbench" / "callbacks"


def test_no_callback_reads_hparams():
    reads = [
        f"{path.name}:{node.lineno}"
        for path in sorted(CALLBACKS.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Attribute) and node.attr == "hparams")
        or (isinstance(node, ast.Constant) and node.value == "hparams")  # getattr(pl_module, "hparams")
    ]
    assert not reads


class NoHparams:
    """A module whose hparams cannot be read; no step trick."""

    step_tricks = ()

    @property
    def hparams(self):
        raise AssertionError("a callback read pl_module.hparams")


def _trainer(step: int) -> SimpleNamespace:
    return SimpleNamespace(
        global_step=step,
        current_epoch=0,
        log_every_n_steps=50,
        num_training_batches=10,
        is_global_zero=True,
        strategy=SimpleNamespace(reduce_boolean_decision=lambda bad, all: bad),
        datamodule=SimpleNamespace(num_classes=10),
    )


def test_hints_come_from_the_callbacks_own_arguments(caplog):
    cfg = compose_cfg(["optimizer.lr=0.5", "norm=batch", "data.normalize=standardize", "init=he_normal"])
    guard, first_loss = instantiate(cfg.callbacks.divergence), instantiate(cfg.callbacks.first_loss)
    with pytest.raises(Diverged, match=r"lr too high \(optimizer.lr=0.5\)$"):  # normalized, with norm layers
        guard.on_train_batch_end(_trainer(1), NoHparams(), {"loss": torch.tensor(float("nan"))}, None, 0)
    with caplog.at_level(logging.WARNING):
        first_loss.on_train_batch_end(_trainer(1), NoHparams(), {"loss": torch.tensor(20.0)}, None, 0)
    (said,) = [r.getMessage() for r in caplog.records if r.name == "trickbench.callbacks.monitors"]
    assert said.endswith("init scale (init=he_normal, norm=batch; try trick=batchnorm)")  # inputs normalized
    skipped = instantiate(compose_cfg(["model.init_from=elsewhere.ckpt"]).callbacks.first_loss)
    skipped.on_train_batch_end(_trainer(1), NoHparams(), {"loss": torch.tensor(20.0)}, None, 0)
    assert skipped.first_loss is None  # loaded weights: not checked


def test_a_hint_set_by_hand_is_checked_and_a_bad_source_named_first():
    from trickbench.config.validate import validate

    with pytest.raises(ConfigError, match=r"^callbacks.divergence.lr=-1: a number > 0"):
        validate(compose_cfg(["callbacks.divergence.lr=-1"]))
    with pytest.raises(ConfigError, match=r"^optimizer.lr=-1: "):  # the key the user set, not the callback's copy
        validate(compose_cfg(["optimizer.lr=-1"]))
