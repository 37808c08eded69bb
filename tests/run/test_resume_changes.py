"""Nothing silent (issue item 3): resume=<run folder> with an override that differs from the run's is refused in one
line naming both values, unless resume_changes allows it; an allowed change takes effect and is said in one line."""

import json
import logging
import shutil

import pytest
import torch
from conftest import compose_cfg, tiny_run_overrides, train_cli

from trickbench.errors import ConfigError
from trickbench.config.resume_changes import kept_settings
from trickbench.train import main_task, run


@pytest.fixture
def run_dir(fmnist_mirror, tmp_path):
    """A 1-epoch run at optimizer.lr=0.002, killed after its last.ckpt and before its results.json (its own per test:
    the config stored in last.ckpt names its folder's paths, so a copy would write back into the first)."""
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "optimizer.lr=0.002", "seed=4"]
    run(compose_cfg(overrides, tmp_path / "run"))
    (tmp_path / "run" / "results.json").unlink()
    return tmp_path / "run"


def test_a_differing_key_is_refused_in_one_line_naming_both_values(run_dir, capsys):
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(SystemExit) as stop:
        main_task(compose_cfg([f"resume={run_dir}", "optimizer.lr=0.1", "seed=9", "trainer.log_every_n_steps=1"]))
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: resume={str(run_dir)!r}: optimizer.lr=0.1 differs from the run's optimizer.lr=0.002; seed=9 differs "
        "from the run's seed=4; a resumed run keeps its settings (start a new run to change them)"
    ]
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before  # nothing trained


def test_the_runs_own_value_again_and_allowed_changes_take_effect_and_are_said_once(run_dir, caplog):
    asked = [f"resume={run_dir}", "optimizer.lr=0.002", "trainer.log_every_n_steps=1", "trainer.max_epochs=2"]
    with caplog.at_level(logging.INFO, logger="trickbench.config.resume_changes"):
        assert main_task(compose_cfg(asked)) > 0
    said = [r.getMessage() for r in caplog.records if r.name == "trickbench.config.resume_changes"]
    assert said == [
        f"resume={run_dir}: changed on resume: trainer.log_every_n_steps=1 (the run's: 50), trainer.max_epochs=2 "
        "(the run's: 1)"
    ]
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 2
    stored = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]["config"]
    assert stored["trainer"]["log_every_n_steps"] == 1 and stored["optimizer"]["lr"] == 0.002


@pytest.mark.slow
def test_a_finished_run_resumed_with_more_epochs_trains_on_and_then_is_done(fmnist_mirror, tmp_path):
    run_dir = tmp_path / "run"  # a real process: Hydra records the run's overrides in .hydra/, as resume= reads them
    overrides = [*tiny_run_overrides(fmnist_mirror, root=tmp_path / "data"), "seed=4", f"hydra.run.dir={run_dir}"]
    assert train_cli(*overrides).returncode == 0
    assert main_task(compose_cfg([f"resume={run_dir}", "trainer.max_epochs=2"])) > 0  # not "skipped: ... status ok"
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 2
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + 2  # a row per epoch, each once
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    main_task(compose_cfg([f"resume={run_dir}", "trainer.max_epochs=2"]))  # finished at its length: skipped
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before


def test_a_moved_run_resumes_in_its_new_folder_and_writes_nothing_in_the_old(run_dir, tmp_path, caplog):
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(run_dir, moved)
    with caplog.at_level(logging.INFO, logger="trickbench.checkpoints"):
        assert main_task(compose_cfg([f"resume={moved}", "trainer.max_epochs=2"])) > 0
    assert f"resume={moved}: the run was moved from {run_dir}; its paths follow it" in caplog.messages
    assert not run_dir.exists()  # checkpoints and loggers follow the folder, not the paths stored in last.ckpt
    assert json.loads((moved / "results.json").read_text())["epochs"] == 2
    stored = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]["config"]
    assert stored["paths"]["output_dir"] == str(moved)


@pytest.mark.parametrize(
    ("schedule", "follows"),
    [
        ([], None),
        (["scheduler=step", "scheduler.lr_scheduler.step_size=2"], None),
        (["scheduler=cosine"], "scheduler.lr_scheduler.T_max=null"),
        (["scheduler=linear"], "scheduler.lr_scheduler.total_iters=null"),
        (["scheduler=multistep"], "scheduler.lr_scheduler.milestones=[0.5, 0.75]"),
        (["scheduler.warmup_epochs=0.2"], "scheduler.warmup_epochs=0.2"),
        (["scheduler=exponential", "scheduler.final_lr_factor=0.1"], "scheduler.final_lr_factor=0.1"),
        (["trick=swa"], "callbacks.swa.swa_epoch_start=0.75"),
    ],
)
def test_max_epochs_may_change_only_while_no_schedule_follows_the_run_length(schedule, follows, tmp_path):
    ran = compose_cfg([*schedule, "trainer.max_epochs=4"])
    asked = compose_cfg([*schedule, "trainer.max_epochs=6"])
    if follows is None:
        assert kept_settings(asked, ran, ["trainer.max_epochs=6"], tmp_path).trainer.max_epochs == 6
        return
    with pytest.raises(ConfigError) as refused:
        kept_settings(asked, ran, ["trainer.max_epochs=6"], tmp_path)
    assert str(refused.value) == (
        f"resume={str(tmp_path)!r}: trainer.max_epochs=6 differs from the run's trainer.max_epochs=4 (the run follows "
        f"its length: {follows}); a resumed run keeps its settings (start a new run to change them)"
    )
