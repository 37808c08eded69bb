"""Real sweeps through the CLI: parallel launchers, failed jobs, resume, and the report at the end."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose_cfg, tiny_run_overrides
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

PNGS = ("val_acc.png", "train_loss.png", "test_acc_delta.png")


def _sweep(tmp: Path, source: Path, *args: str, timeout=240) -> tuple[subprocess.CompletedProcess, Path]:
    logs = tmp / "logs"
    cmd = [sys.executable, "train.py", "-m", *tiny_run_overrides(source, root=tmp / "data"), f"paths.log_dir={logs}"]
    proc = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    folders = sorted((logs / "train" / "multiruns").glob("*"))
    return proc, (folders[-1] if folders else None)


def _results(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("[0-9]*/results.json"))}


def _trick(results: dict) -> str:
    return next(o for o in results["overrides"] if o.startswith("trick="))


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory, fmnist_mirror):
    tmp = tmp_path_factory.mktemp("joblib")
    args = ("trick=none,batchnorm,he_init", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    proc, folder = _sweep(tmp, fmnist_mirror, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, folder, args


@pytest.mark.slow
def test_joblib_sweep_report_numbers_equal_the_jobs_results(joblib_sweep):
    _, folder, _ = joblib_sweep
    results = _results(folder)
    assert len(results) == 3 and all(r["status"] == "ok" for r in results.values())
    # parallel jobs' wall times are not comparable with single runs: each records how the machine was shared
    assert {r["n_jobs"] for r in results.values()} == {2}
    assert {r["threads"] for r in results.values()} == {max((os.cpu_count() or 1) // 2, 1)}
    with open(folder / "report.csv") as fh:
        rows = {r["config"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"trick=none", "trick=batchnorm", "trick=he_init"}
    assert rows["trick=none"]["baseline"] == "True"  # the sweep's first configuration
    by_trick = {_trick(r): r for r in results.values()}
    base = by_trick["trick=none"]["test"]["acc"]
    md = (folder / "report.md").read_text()
    for trick, r in by_trick.items():
        row = rows[trick]
        assert float(row["test_acc_mean"]) == pytest.approx(r["test"]["acc"], abs=1e-12)
        assert float(row["val_acc_best_mean"]) == pytest.approx(r["val"]["acc_best"], abs=1e-12)
        assert float(row["train_acc_last_mean"]) == pytest.approx(r["train"]["acc_last"], abs=1e-12)
        assert int(row["params"]) == r["params"]
        assert f"{100 * r['test']['acc']:.2f}" in md
        if trick != "trick=none":
            assert float(row["diff_mean"]) == pytest.approx(r["test"]["acc"] - base, abs=1e-12)
            assert row["diff_ci_low"] == ""  # one seed: no interval
    assert "n/a (one seed)" in md
    for png in PNGS:
        assert (folder / png).stat().st_size > 10_000


@pytest.mark.slow
def test_resume_skips_finished_jobs_and_reruns_the_rest(joblib_sweep, fmnist_mirror):
    tmp, folder, args = joblib_sweep
    rerun = folder / "1"
    (rerun / "results.json").unlink()  # as if job 1 had been killed before it finished
    for f in (rerun / "checkpoints").glob("*"):
        f.unlink()
    before = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("[02]/results.json")}
    proc, newest = _sweep(tmp, fmnist_mirror, *args, f"resume={folder}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert newest == folder  # no new sweep folder: the jobs ran in the old one
    after = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("[02]/results.json")}
    assert after == before  # finished jobs untouched
    assert json.loads((rerun / "results.json").read_text())["status"] == "ok"
    assert (rerun / ".hydra" / "overrides.yaml").exists()  # the first attempt's record is kept


@pytest.mark.slow
def test_records_restored_on_another_machine_resume_the_sweep_skipping_their_jobs(joblib_sweep, fmnist_mirror):
    from trickbench.report import records

    tmp, folder, args = joblib_sweep
    committed = tmp / "records"
    records.copy_records(tmp / "logs" / "train", committed)  # <scale>/<part>/ = multiruns/<stamp>/
    part = committed / "multiruns" / folder.name
    assert "<outside the repository>" in (part / "0" / "results.json").read_text()  # no path of this machine
    shutil.rmtree(part / "2")  # a job the sitting did not finish
    elsewhere = tmp / "other"  # another checkout: a fresh results folder, the dataset at another path
    elsewhere.mkdir()
    (elsewhere / "mirror").symlink_to(fmnist_mirror, target_is_directory=True)
    assert records.restore_records(committed, elsewhere / "logs") == [elsewhere / "logs" / "multiruns" / folder.name]
    assert records.restore_records(committed, elsewhere / "logs") == []  # a folder there is never overwritten
    restored = elsewhere / "logs" / "multiruns" / folder.name
    before = {p.parent.name: p.read_bytes() for p in restored.glob("[01]/results.json")}
    proc, _ = _sweep(elsewhere, elsewhere / "mirror", *args, f"resume={restored}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.parent.name: p.read_bytes() for p in restored.glob("[01]/results.json")} == before  # skipped
    assert json.loads((restored / "2" / "results.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_failed_and_diverged_jobs_are_recorded_the_rest_finish_and_the_sweep_exits_nonzero(tmp_path, fmnist_mirror):
    proc, folder = _sweep(tmp_path, fmnist_mirror, "optimizer=sgd", "optimizer.lr=0.01,-1,1e12")
    assert proc.returncode == 1
    results = {r["overrides"][-1]: r for r in _results(folder).values()}
    assert results["optimizer.lr=0.01"]["status"] == "ok"
    assert results["optimizer.lr=-1"]["status"] == "failed"
    assert results["optimizer.lr=-1"]["error"] == "optimizer.lr=-1: a number > 0"
    assert results["optimizer.lr=1000000000000.0"]["status"] == "diverged"
    assert results["optimizer.lr=1000000000000.0"]["error"].startswith("diverged: training loss is nan at step")
    assert "2 of 3 jobs failed" in proc.stderr
    assert "job 1 (optimizer.lr=-1, seed 0): failed: optimizer.lr=-1: a number > 0" in proc.stderr
    md = (folder / "report.md").read_text()
    assert "## Jobs that did not finish" in md and "| diverged |" in md


@pytest.mark.slow
def test_submitit_local_runs_two_jobs(tmp_path, fmnist_mirror):
    proc, folder = _sweep(
        tmp_path,
        fmnist_mirror,
        "trick=none,batchnorm",
        "hydra/launcher=submitit_local",
        "hydra.sweeper.max_batch_size=2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(folder)
    assert sorted(_trick(r) for r in results.values()) == ["trick=batchnorm", "trick=none"]
    assert all(r["status"] == "ok" and r["n_jobs"] == 2 for r in results.values())
    assert (folder / ".submitit").is_dir() and (folder / "report.md").exists()
    with open(folder / "report.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2  # the .submitit folder is not read as jobs


def test_slurm_launcher_config_composes():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 4, 1)
    assert launcher.timeout_min > 0 and launcher.mem_gb > 0 and launcher.max_num_timeout > 0


@pytest.mark.parametrize(
    "preset, key, first, n",
    [
        ("lecture_solutions", "trick", "none", 8),
        ("activations", "activation", "relu", 7),
        ("inits", "init", "default", 5),
        ("norms", "norm", "none", 5),
        ("generalization", "ladder", "generalization/base", 9),
    ],
)
def test_ablation_presets_sweep_one_group_and_every_option_composes(preset, key, first, n):
    cfg = compose_cfg([f"experiment=ablation/{preset}"])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        hydra_cfg = compose("train", overrides=[f"experiment=ablation/{preset}"], return_hydra_config=True)
    parsed = OverridesParser.create().parse_overrides([f"{key}={hydra_cfg.hydra.sweeper.params[key]}"])[0]
    options = list(parsed.sweep_string_iterator())  # a value may be a list: trick=[silu,standardize]
    assert len(options) == n and options[0] == first  # the first configuration is the report's baseline
    for option in options:
        compose_cfg([f"experiment=ablation/{preset}", f"{key}={option}"])
    assert cfg.task_name


def test_generalization_ladder_keeps_every_earlier_rung():
    base = compose_cfg(["experiment=ablation/generalization", "ladder=generalization/base"])
    top = compose_cfg(["experiment=ablation/generalization", "ladder=generalization/skip"])
    assert (base.data.normalize, base.init.name, base.norm.name, base.augment.erasing) == (
        "standardize",
        "he_uniform",
        "none",
        None,
    )
    assert top.augment.erasing.p == 0.75 and list(top.augment.erasing.scale) == [0.01, 0.3]
    assert top.norm.name == "batch" and top.model.dropout > 0 and top.optimizer.weight_decay == 5e-4
    assert (top.augment.crop_padding, top.augment.hflip, top.augment.rotation) == (2, True, 5)
    assert top.scheduler.lr_scheduler.gamma == 0.96 and top.model.skip is True
    assert list(top.model.channels) == [2 * c for c in base.model.channels]
