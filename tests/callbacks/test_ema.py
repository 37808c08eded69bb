"""trick=ema (callbacks/ema.py, EMAWeightAveraging): the update formula on a known sequence, and the averaged weights
are what is validated, checkpointed and tested."""

from types import SimpleNamespace

import pytest
import torch
from conftest import compose_cfg, run_with_probe, tiny_run_overrides
from hydra.utils import instantiate
from torch import nn

from trickbench import train

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def ema_callback(decay: float | None = None):
    cfg = compose_cfg(["trick=ema", *([f"callbacks.ema.decay={decay}"] if decay else [])])
    return instantiate(cfg.callbacks.ema), float(cfg.callbacks.ema.decay)


def expected_ema(sequence: list[torch.Tensor], decay: float) -> torch.Tensor:
    ema = sequence[0]  # the first update copies the weights
    for w in sequence[1:]:
        ema = decay * ema + (1 - decay) * w
    return ema


def test_ema_callback_follows_the_formula_on_a_known_sequence():
    callback, decay = ema_callback()
    assert decay == 0.999
    module = train.build_module(compose_cfg([]), nn.Linear(2, 1), num_classes=2)
    callback.setup(SimpleNamespace(), module, "fit")
    sequence = [torch.full((1, 2), v) for v in (1.0, 3.0, -2.0, 5.0)]
    for step, w in enumerate(sequence, start=1):
        module.net.weight.data.copy_(w)
        callback.on_train_batch_end(SimpleNamespace(global_step=step), module, None, None, step - 1)
    averaged = callback._average_model.module.net.weight
    want = expected_ema([w.double() for w in sequence], decay)
    torch.testing.assert_close(averaged.double(), want, rtol=1e-6, atol=1e-6)
    by_hand = 1.0 * 0.999**3 + 0.001 * (3 * 0.999**2 - 2 * 0.999 + 5)  # d^3 w1 + (1 - d)(d^2 w2 + d w3 + w4)
    assert averaged.flatten()[0].item() == pytest.approx(by_hand, rel=1e-6)


def test_ema_weights_are_validated_checkpointed_and_tested(fmnist_mirror, tmp_path, monkeypatch):
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "trick=ema", "callbacks.ema.decay=0.5"]
    results, probe = run_with_probe(compose_cfg(overrides, tmp_path / "run"), monkeypatch)
    checkpoint = torch.load(results["checkpoints"]["best"], weights_only=True)
    assert len(probe.steps) == 3 and checkpoint["global_step"] == 3
    for key, raw in probe.steps[-1].items():
        ema = expected_ema([step[key].double() for step in probe.steps], 0.5)
        if raw.is_floating_point():
            assert not torch.allclose(raw.double(), ema)  # the raw weights moved away from their average
        torch.testing.assert_close(checkpoint["state_dict"][key].double(), ema, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(probe.validated[-1][key], checkpoint["state_dict"][key])
        torch.testing.assert_close(probe.tested[key], checkpoint["state_dict"][key])
        torch.testing.assert_close(checkpoint["current_model_state"][key], raw)
