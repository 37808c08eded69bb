"""SLURM: the launcher's settings follow the trainer, time limits lose no training (mid-epoch checkpoints resume
bitwise), and on a real one-node cluster (tests/slurm/start-cluster.sh) a sweep runs to its report and a job with a
one-minute time limit finishes across requeues with the weights of an uninterrupted run. Without a cluster those
two are skipped, unless TRICKBENCH_REQUIRE_SLURM=1 (.ci/run) makes that a failure."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, same_weights, tiny_run_overrides, train_cli

from trickbench.config import CONF_DIR
from trickbench.data.loader import EpochOrder, TensorLoader
from trickbench.loggers import read_metrics_csv

PARTITION = "debug"


def test_launcher_settings_follow_the_trainer():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.max_num_timeout >= 1 and launcher.signal_delay_s > 0  # time limits requeue
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 4 and cfg.trainer.num_nodes == 2
    assert "sweep_placement" in cfg.hydra.callbacks  # refuses a SLURM sweep without numbers before submitting


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["trainer=ddp"], "error: trainer.devices='auto': an integer >= 1 under hydra/launcher=slurm"),
        (["trainer.devices=2", "trainer.num_nodes=0"], "error: trainer.num_nodes=0: an integer >= 1 under"),
    ],
)
def test_slurm_sweep_without_numbers_is_refused_in_one_line(overrides, line, tmp_path):
    proc = train_cli("-m", "hydra/launcher=slurm", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(line), proc.stderr
    assert not (tmp_path / "sweep" / ".submitit").exists()  # nothing submitted


def test_loader_resumes_its_pass_at_the_saved_batch():
    x, y = torch.arange(10).view(10, 1, 1, 1).to(torch.uint8), torch.arange(10)
    whole = TensorLoader(x, y, 3, EpochOrder(10, seed=1))
    whole.sampler.set_epoch(2)
    batches = [b[1].tolist() for b in whole]
    first = iter(whole)
    next(first), next(first)
    state = whole.state_dict()
    assert state == {"epoch": 2, "batches": 2}

    resumed = TensorLoader(x, y, 3, EpochOrder(10, seed=1))
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # Lightning sets the epoch after loading the state, before the first batch
    assert [b[1].tolist() for b in resumed] == batches[2:]
    assert [b[1].tolist() for b in resumed] == batches  # the next pass is a whole one again
    other_epoch = TensorLoader(x, y, 3, EpochOrder(10, seed=1))
    other_epoch.load_state_dict(state)
    other_epoch.sampler.set_epoch(3)  # a saved position belongs to its epoch only
    assert len(list(other_epoch)) == 4


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory, fmnist_mirror):
    """One epoch of 45 batches with dropout, augmentation and a per-step lr schedule: every interruption falls
    mid-epoch."""
    tmp = tmp_path_factory.mktemp("timelimit")
    overrides = [
        *tiny_run_overrides(fmnist_mirror, root=tmp / "data"),
        "data.subset=200",
        "data.val_size=20",
        "data.batch_size=4",
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "model.dropout=0.3",
        "augment=crop_flip",
        "scheduler=linear",
        "seed=3",
        "threads=1",
    ]
    return tmp, overrides


@pytest.mark.slow
def test_sigterm_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(slow_run):
    tmp, overrides = slow_run
    term = [
        "+callbacks.term._target_=hooks.SignalAt",
        "+callbacks.term.epoch=0",
        "+callbacks.term.batch=20",
        "+callbacks.term.signal=SIGTERM",
        f"+callbacks.term.marker={tmp}/t",
    ]
    # this checkout's src/ first, as train_cli has it: the venv's editable install may point at another checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")])}
    cmd = [sys.executable, "train.py", *overrides, f"hydra.run.dir={tmp / 'whole'}"]
    # meanwhile the uninterrupted run, in parallel
    reference = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc = train_cli(*overrides, *term, f"hydra.run.dir={tmp / 'term'}")
    assert proc.returncode == 143, proc.stderr[-3000:]
    ckpt = torch.load(tmp / "term" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 21  # batches 0-20 trained (the signal's batch finishes), mid-epoch
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 21}]
    proc = train_cli(f"resume={tmp / 'term'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
    assert same_weights(tmp / "term", tmp / "whole")
    # the resumed epoch's lr is still that of its first step (lr0), not of the step it resumed at
    lrs = [[row["lr"] for row in read_metrics_csv(tmp / run / "metrics.csv")] for run in ("term", "whole")]
    assert lrs[0] == lrs[1] == [pytest.approx(json.loads((tmp / "whole" / "results.json").read_text())["lr"])]


# ---- a real cluster --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    up = (
        shutil.which("sinfo")
        and subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%a"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        == "up"
    )
    if not up:
        why = f"no SLURM partition {PARTITION!r} here: run tests/slurm/start-cluster.sh as root"
        if os.environ.get("TRICKBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return [
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={PARTITION}",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=null",
    ]


@pytest.mark.slow  # a real SLURM cluster's jobs (tests/slurm/start-cluster.sh)
def test_a_sweep_runs_on_slurm_to_its_report(cluster, tmp_path, fmnist_mirror):
    sweep = tmp_path / "sweep"
    overrides = tiny_run_overrides(fmnist_mirror, root=tmp_path / "data")
    proc = train_cli(
        "-m", *cluster, "hydra.launcher.timeout_min=5", "trick=none,batchnorm", *overrides, f"hydra.sweep.dir={sweep}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((sweep / str(job) / "results.json").read_text()) for job in (0, 1)]
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert "trick=none" in results[0]["overrides"] and "trick=batchnorm" in results[1]["overrides"]
    report = (sweep / "report.md").read_text()
    assert "trick=none" in report and "trick=batchnorm" in report
    tasks = sorted(d.name.split("_")[-1] for d in (sweep / ".submitit").glob("*_*") if d.is_dir())
    assert tasks == ["0", "1"]  # one SLURM array, a task per job


@pytest.mark.slow  # a real SLURM cluster's jobs (tests/slurm/start-cluster.sh)
def test_a_time_limit_requeues_and_the_job_ends_as_if_never_stopped(cluster, slow_run):
    tmp, overrides = slow_run
    sweep = tmp / "timelimit"
    # SLURM signals 10 s before the one-minute limit, or up to 30 s earlier (20-50 s after the start); the first
    # start sleeps 1.2 s a batch and needs over a minute, the requeued one trains at full speed
    limit = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=10", "hydra.launcher.max_num_timeout=3"]
    slow = ["+callbacks.slow._target_=hooks.SleepPerBatch", "+callbacks.slow.seconds=1.2"]
    if not (tmp / "whole" / "results.json").exists():  # the reference of the SIGTERM test, when run alone
        assert train_cli(*overrides, f"hydra.run.dir={tmp / 'whole'}").returncode == 0
    proc = train_cli("-m", *cluster, *limit, *overrides, *slow, f"hydra.sweep.dir={sweep}", timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = sweep / "0"
    log = (job / "train.log").read_text()
    saves = [int(line.rsplit("at step ", 1)[1].split(";")[0]) for line in log.splitlines() if "time limit near" in line]
    assert len(saves) == 1 and 0 < saves[0] < 45, log[-3000:]  # requeued once, mid-epoch
    assert log.count("resuming from") == 1
    results = json.loads((job / "results.json").read_text())
    assert results["status"] == "ok" and results["epochs"] == 1
    assert same_weights(job, tmp / "whole")
    assert results["test"] == json.loads((tmp / "whole" / "results.json").read_text())["test"]
