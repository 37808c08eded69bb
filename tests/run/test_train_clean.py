"""train_clean=true: after fit, last.ckpt's weights evaluated on the training split in eval mode with the eval
transform (normalization only), the figure docs/results.md's "overfits" compares with test_last."""

import json

import pytest
import torch
from conftest import check_contract, compose_cfg, last_weights, tiny_run_overrides
from hydra.utils import instantiate

from trickbench.models import build_model
from trickbench.module import build_module
from trickbench.train import run

# augmentation, mixup and dropout on: each would change a pass that applied them; whole splits tested. Small
# batches and a wider net: 30 steps from chance to about a third of the training images, where the figures part.
NOISY = ["augment=full", "augment.mixup_alpha=0.2", "model.dropout=0.5", "trainer.limit_test_batches=null"]
LEARNS = ["trainer.max_epochs=2", "trainer.limit_train_batches=null", "data.batch_size=8", "optimizer.lr=0.003"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, fmnist_mirror):
    tmp = tmp_path_factory.mktemp("train_clean")
    # 32-true: the independent evaluation below computes in float32 (bf16-mixed would part in the 5th digit)
    wider = ["model.channels=[8,16]", "model.head=[32]", "trainer.precision=32-true"]
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp / "data"), *NOISY, *LEARNS, *wider]
    cfg = compose_cfg([*overrides, "train_clean=true"], tmp / "run")
    return cfg, run(cfg), tmp / "run"


def _last_ckpt_on_train_split(cfg, run_dir, *, train: bool):
    """An independent evaluation of last.ckpt's weights on the run's training split: the eval transform in eval mode
    (train=False), or augmentation and dropout on (train=True). Returns (correct, images, mean loss)."""
    dm = instantiate(cfg.data, augment=cfg.augment, seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, dm.shape, dm.num_classes)
    module = build_module(cfg, net, dm.num_classes)
    module.load_state_dict(last_weights(run_dir))
    module.train(train)
    torch.manual_seed(0)
    with torch.no_grad():
        logits = module(dm.transform(dm.train_set.x, train=train))
    y = dm.train_set.y
    return int((logits.argmax(1) == y).sum()), len(y), float(torch.nn.functional.cross_entropy(logits, y))


def test_train_clean_is_last_ckpt_evaluated_on_the_unaugmented_training_split(clean_run):
    cfg, results, run_dir = clean_run
    on_disk = json.loads((run_dir / "results.json").read_text())
    check_contract(on_disk)
    correct, n, loss = _last_ckpt_on_train_split(cfg, run_dir, train=False)
    assert n == 160 - 40  # data.subset - data.val_size: every training image, once
    assert on_disk["train_clean"]["acc"] == float(torch.tensor(correct, dtype=torch.float32) / n)
    assert on_disk["train_clean"]["loss"] == pytest.approx(loss, rel=1e-5)
    assert on_disk["timing"]["train_clean_s"] > 0


def test_train_clean_differs_from_the_augmented_train_figures(clean_run):
    cfg, results, run_dir = clean_run
    clean = results["train_clean"]
    correct, n, noisy_loss = _last_ckpt_on_train_split(cfg, run_dir, train=True)
    # the same weights with augmentation and dropout on: 0.167 of the images against 0.35, loss 2.28 against 2.24
    assert clean["acc"] >= correct / n + 0.1 and clean["loss"] < noisy_loss
    # the training figure the report had: the last epoch's, augmented and mixed, under dropout (0.083)
    assert clean["acc"] >= results["train"]["acc_last"] + 0.1
