"""metrics.csv's lr of epoch e is the lr epoch e trained with (that of its first optimizer step), and results.json
says so (metrics_lr: "epoch_start", what report/results_lr.py draws from)."""

import pytest
from conftest import compose_cfg, tiny_run_overrides

from trickbench.loggers import read_metrics_csv
from trickbench.train import run

EPOCHS = 3
STEPS = 3  # tiny_run_overrides' trainer.limit_train_batches: optimizer steps per epoch


def _logged_lr(tmp_path, fmnist_mirror, *overrides) -> tuple[list[float], dict]:
    base = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), f"trainer.max_epochs={EPOCHS}"]
    results = run(compose_cfg([*base, *overrides, "test_after_fit=false"], tmp_path / "run"))
    assert results["metrics_lr"] == "epoch_start"
    return [row["lr"] for row in read_metrics_csv(tmp_path / "run" / "metrics.csv")], results


def test_a_per_epoch_schedule_logs_lr0_times_gamma_to_the_epoch(tmp_path, fmnist_mirror):
    lrs, results = _logged_lr(tmp_path, fmnist_mirror, "scheduler=exponential", "scheduler.lr_scheduler.gamma=0.5")
    lr0 = results["lr"]
    assert lrs == pytest.approx([lr0, lr0 * 0.5, lr0 * 0.25], rel=1e-6)


def test_a_per_step_schedule_logs_the_lr_of_each_epochs_first_step(tmp_path, fmnist_mirror):
    # LinearLR from lr0 to 0 over the run's 9 steps: step k trains at lr0 * (1 - k / 9); epoch e starts at k = 3e
    lrs, results = _logged_lr(tmp_path, fmnist_mirror, "scheduler=linear")
    lr0 = results["lr"]
    assert lrs == pytest.approx([lr0 * (1 - STEPS * e / (EPOCHS * STEPS)) for e in range(EPOCHS)], rel=1e-6)
