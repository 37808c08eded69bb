"""The bitwise resume still holds with the step-changing and averaging tricks on (SAM, stochastic depth,
SWA, gradient clipping, together): a run that crashes at an epoch's start and is started again in its folder ends with
the weights, the averaged weights and the test result of the run that never stopped."""

import pytest
import torch
from conftest import compose_cfg, last_weights, tiny_run_overrides

from trickbench.train import run

EPOCHS = 4


@pytest.fixture(scope="module")
def overrides(fmnist_mirror, tmp_path_factory):
    root = tmp_path_factory.mktemp("trick_resume") / "data"
    tiny = [
        o for o in tiny_run_overrides(fmnist_mirror, root=root) if not o.startswith(("model.channels", "model.head"))
    ]
    return [
        *tiny,
        "model=resnet20",
        "model.width=4",
        "model.blocks=[1,1,1]",
        "trick=[sam,stochastic_depth,swa,grad_clip]",
        "callbacks.swa.swa_epoch_start=2",  # averaging from the 2nd epoch (1-based): the crash comes mid-average
        "augment=crop_flip",  # per-step random draws to replay, with stochastic depth's
        f"trainer.max_epochs={EPOCHS}",
        "seed=5",
    ]


@pytest.mark.slow
def test_a_crashed_run_with_the_new_tricks_resumes_to_the_same_weights(overrides, tmp_path):
    whole = run(compose_cfg(overrides, tmp_path / "whole"))
    crash = ["+callbacks.crash._target_=hooks.RaiseAt", "+callbacks.crash.epoch=2"]
    with pytest.raises(RuntimeError, match="crash at the start of epoch 2"):
        run(compose_cfg([*overrides, *crash], tmp_path / "crashed"))
    assert torch.load(tmp_path / "crashed" / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1

    resumed = run(compose_cfg(overrides, tmp_path / "crashed"))  # last.ckpt in its folder: it resumes
    a, b = last_weights(tmp_path / "crashed"), last_weights(tmp_path / "whole")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == whole["test"] and resumed["epochs"] == whole["epochs"]
