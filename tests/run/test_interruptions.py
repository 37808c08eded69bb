"""Nothing lost (SIGKILL at every moment of a run: test_faults.py): SIGTERM checkpoints, NaN losses and finite
losses grown far beyond their start stop as "diverged", and gradient norms expose networks that do not learn."""

import json
import math
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_cfg, tiny_run_overrides, train_cli

from trickbench import sweep
from trickbench.callbacks import DivergenceGuard
from trickbench.errors import Diverged
from trickbench.loggers import read_metrics_csv
from trickbench.sweep import Launch, search
from trickbench.sweep.placement import NO_LAUNCHER
from trickbench.train import main_task, run

EPOCHS = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fmnist_mirror):
    tmp = tmp_path_factory.mktemp("interrupt")
    # dropout and augmentation on: the resumed run must also replay the per-step random draws
    extra = [f"trainer.max_epochs={EPOCHS}", "model.dropout=0.3", "augment=crop_flip", "seed=3"]
    return tmp, [*tiny_run_overrides(fmnist_mirror, root=tmp / "data"), *extra]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143_then_resume_finishes(tiny):
    tmp, overrides = tiny
    run_dir = tmp / "terminated"
    term = [
        "+callbacks.term._target_=hooks.SignalAt",
        "+callbacks.term.epoch=1",
        "+callbacks.term.batch=1",
        "+callbacks.term.signal=SIGTERM",
        f"+callbacks.term.marker={tmp}/t",
    ]
    proc = train_cli(*overrides, *term, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert f"resume={run_dir}" in proc.stderr
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3 + 2  # epoch 1 complete (3 batches) and the 2 batches of epoch 2 that ran

    proc = train_cli(f"resume={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == EPOCHS


def test_resume_without_a_checkpoint_fails_in_one_line(tmp_path):
    proc = train_cli(f"resume={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: resume='{tmp_path}': a run folder holding checkpoints/last.ckpt or .hydra/config.yaml (from an "
        "earlier run)"
    ]


def test_nan_loss_stops_the_run_as_diverged(tmp_path, fmnist_mirror, capsys):
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "optimizer=sgd", "optimizer.lr=1e12"]
    cfg = compose_cfg([*overrides, "trainer.log_every_n_steps=1"], tmp_path / "run")
    with pytest.raises(SystemExit) as exit_:
        main_task(cfg)
    assert exit_.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: diverged: training loss is nan at step ")
    assert "lr too high (optimizer.lr=1000000000000.0)" in err[0] and "data.normalize=none" in err[0]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "diverged" and results["error"] == err[0].removeprefix("error: ")


def test_a_network_that_does_not_learn_is_not_an_error_but_warns_and_logs_gradient_norms(tmp_path, fmnist_mirror):
    overrides = [
        *tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"),
        "model=cnn_9conv",
        "activation=sigmoid",
        "model.channels=[4,4,4]",
        "model.head=[8]",
        "trainer.log_every_n_steps=1",
    ]
    cfg = compose_cfg(overrides, tmp_path / "run")
    with pytest.warns(UserWarning, match="vanishing gradients at step 0") as warned:
        results = run(cfg)
    assert len([w for w in warned if "vanishing" in str(w.message)]) == 1  # once, not every step
    assert results["status"] == "ok"
    row = read_metrics_csv(tmp_path / "run" / "metrics.csv")[0]
    assert 0 < row["grad_norm_first"] < 1e-3 * row["grad_norm_last"]
    events = b"".join(p.read_bytes() for p in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert b"grad_norm/net.features.0" in events and b"grad_norm/net.head" in events


def test_a_healthy_network_does_not_warn(tmp_path, fmnist_mirror, recwarn):
    cfg = compose_cfg([*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data")], tmp_path / "run")
    run(cfg)
    assert not [w for w in recwarn if "vanishing" in str(w.message)]
    row = read_metrics_csv(tmp_path / "run" / "metrics.csv")[0]
    assert row["grad_norm_first"] > 1e-3 * row["grad_norm_last"]


class _Strategy:
    """Stands in for DDP: reduce_boolean_decision(all=False) is True when any rank says True."""

    def __init__(self, other_rank_bad: bool):
        self.other_rank_bad = other_rank_bad

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        assert all is False  # "any rank diverged", not "every rank diverged"
        return decision or self.other_rank_bad


class _Trainer:
    def __init__(self, step: int, other_rank_bad: bool):
        self.global_step, self.current_epoch, self.log_every_n_steps = step, 0, 10
        self.num_training_batches = 100
        self.strategy = _Strategy(other_rank_bad)
        self.datamodule = SimpleNamespace(num_classes=10)


@pytest.mark.parametrize("other_rank_bad", [False, True])
def test_divergence_check_runs_at_the_logging_interval_and_stops_every_rank(other_rank_bad):
    guard, finite = DivergenceGuard(), {"loss": torch.tensor(2.3)}
    guard.on_train_batch_end(_Trainer(7, True), None, finite, None, 0)  # between intervals: not even looked at
    if other_rank_bad:  # this rank's loss is fine, another rank's is NaN or too large: this rank stops too
        with pytest.raises(Diverged, match="training loss is non-finite or too large on another rank at step 20"):
            guard.on_train_batch_end(_Trainer(20, other_rank_bad), None, finite, None, 0)
    else:
        guard.on_train_batch_end(_Trainer(20, other_rank_bad), None, finite, None, 0)
        with pytest.raises(Diverged, match="training loss is inf at step 30"):
            guard.on_train_batch_end(_Trainer(30, False), None, {"loss": torch.tensor(float("inf"))}, None, 0)


def _checked(guard: DivergenceGuard, step: int, loss: float) -> None:
    guard.on_train_batch_end(_Trainer(step, False), None, {"loss": torch.tensor(loss)}, None, 0)


def test_a_finite_loss_stops_only_above_growth_x_both_its_first_value_and_ln_classes():
    # steps 1, 10, 20, ...: the checked batches of a run with log_every_n_steps=10
    starts_large = DivergenceGuard()  # a loss that starts large and stays there is not divergence
    _checked(starts_large, 1, 1000.0)
    _checked(starts_large, 10, 99_000.0)  # 430 x ln(10), under 100 x its first value
    with pytest.raises(Diverged, match=re.escape("1.5e+05, above 100 x max(first loss 1e+03, ln(10 classes)) = 1e+05")):
        _checked(starts_large, 20, 150_000.0)
    starts_small = DivergenceGuard()  # a first loss below ln(10): ln(10) sets the limit
    _checked(starts_small, 1, 0.5)
    _checked(starts_small, 10, 230.0)  # 460 x its first value, under 100 x ln(10) = 230.26
    with pytest.raises(Diverged, match=r"loss is 231, above .* = 230 \(callbacks.divergence.growth\), at step 20"):
        _checked(starts_small, 20, 231.0)
    off = DivergenceGuard(growth=None)  # callbacks.divergence.growth=null: NaN/inf only
    _checked(off, 1, 2.3)
    _checked(off, 10, 1e30)
    with pytest.raises(Diverged, match="training loss is nan at step 20"):
        _checked(off, 20, math.nan)


def test_a_resumed_run_keeps_its_first_loss_and_so_its_limit():
    ran = DivergenceGuard()
    _checked(ran, 1, 0.5)
    resumed, fresh = DivergenceGuard(), DivergenceGuard()
    resumed.load_state_dict(ran.state_dict())  # what Lightning does with the callback's state in last.ckpt
    _checked(fresh, 30, 300.0)  # a fresh guard takes its first check's loss as the start
    with pytest.raises(Diverged, match="training loss is 300, above 100 x max"):
        _checked(resumed, 30, 300.0)


ADAM_AT_1E6 = ["optimizer=adam", "optimizer.lr=1e6"]  # its loss goes 2.3 -> 1e27: finite, never NaN


def test_a_finite_loss_grown_far_beyond_its_start_stops_a_run_and_a_sweep_job_as_diverged(
    tmp_path, fmnist_mirror, capsys, monkeypatch
):
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), *ADAM_AT_1E6]  # log_every_n_steps=50
    with pytest.raises(SystemExit) as exit_:
        main_task(compose_cfg(overrides, tmp_path / "run"))
    assert exit_.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    said = re.fullmatch(
        r"error: diverged: training loss is (\S+), above 100 x max\(first loss (\S+), ln\(10 classes\)\) = (\S+) "
        r"\(callbacks.divergence.growth\), at step 3 \(epoch 0\); likely causes: lr too high "
        r"\(optimizer.lr=1000000.0\), inputs not normalized \(data.normalize=none\), no normalization layers "
        r"\(norm=none\)",
        err[0],
    )
    assert len(err) == 1 and said, err  # checked in the epoch's last batch (step 3), as the NaN check is
    loss, first, limit = map(float, said.groups())
    assert math.isfinite(loss) and loss > limit == pytest.approx(100 * max(first, math.log(10)), rel=1e-2)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "diverged" and results["error"] == err[0].removeprefix("error: ")

    monkeypatch.setattr(sweep, "launch", lambda: Launch(True, True, "", NO_LAUNCHER))  # a job of a -m sweep
    assert main_task(compose_cfg(overrides, tmp_path / "job")) == search.BAD_SCORE  # the sweep goes on
    job = json.loads((tmp_path / "job" / "results.json").read_text())
    assert job["status"] == "diverged" and job["error"].startswith("diverged: training loss is ")
    assert ", above 100 x max(first loss " in job["error"]


def test_a_large_finite_loss_under_its_growth_limit_is_not_divergence(tmp_path, fmnist_mirror):
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), *ADAM_AT_1E6]
    results = run(compose_cfg([*overrides, "callbacks.divergence.growth=1e30"], tmp_path / "run"))
    assert results["status"] == "ok" and math.isfinite(results["train"]["loss_last"])
    assert results["train"]["loss_last"] > 1e6  # large by design, and left alone
