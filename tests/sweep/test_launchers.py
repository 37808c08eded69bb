"""Where sweep jobs run: hydra/launcher=gpus pins each job to a GPU slot (tested with a fake device list on the
CPU), DDP jobs are refused in a local sweep, whose ranks would re-run the whole sweep, and each launcher's kind comes
from one table (sweep/placement.py LAUNCHERS), an unknown one with a warning."""

import ast
import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, compose_cfg, tiny_run_overrides
from omegaconf import OmegaConf

from hydra_plugins.trickbench_launchers.gpus import slot_devices, take_slot
from trickbench.errors import ConfigError
from trickbench.sweep.placement import (
    LAUNCHERS,
    LauncherKind,
    SweepPlacementCheck,
    check_sweep_placement,
    launcher_kind,
    processes,
)

LOCAL = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def _cli(*args: str, env=None, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_slots_put_each_gpu_jobs_per_gpu_times():
    assert slot_devices([0, 1], 1) == ["0", "1"]
    assert slot_devices([3, 5], 2) == ["3", "3", "5", "5"]
    for devices, k, bad in (([0, 0], 1, "devices"), ([0], 0, "jobs_per_gpu"), ([], 1, "devices"), ([0], True, "jobs")):
        with pytest.raises(ValueError, match=f"hydra.launcher.{bad}"):
            slot_devices(devices, k)


def test_no_gpu_refuses_naming_the_cpu_launchers(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(ValueError, match="no GPU; on a CPU use hydra/launcher=joblib"):
        slot_devices(None, 1)


def _slot_of_this_worker(lock_dir: Path) -> tuple[int, int]:
    return os.getpid(), take_slot(lock_dir, 4)


def test_each_worker_holds_one_slot_for_life_and_workers_never_share_one(tmp_path):
    with ProcessPoolExecutor(max_workers=4) as pool:
        seen = list(pool.map(_slot_of_this_worker, [tmp_path] * 24))
    by_worker = {}
    for pid, slot in seen:
        by_worker.setdefault(pid, set()).add(slot)
    assert all(len(slots) == 1 for slots in by_worker.values())  # a worker's jobs all run on its slot
    slots = [next(iter(s)) for s in by_worker.values()]
    assert len(slots) == len(set(slots)) and set(slots) <= {0, 1, 2, 3}  # no two workers on one slot


@pytest.mark.slow
def test_jobs_on_gpu_slots_run_to_a_complete_report(fmnist_mirror, tmp_path):
    sweep_dir = tmp_path / "sweep"
    overrides = tiny_run_overrides(fmnist_mirror, root=tmp_path / "data")
    proc = _cli(
        "-m",
        *overrides,
        "hydra/launcher=gpus",
        "hydra.launcher.devices=[4,7]",
        "seed=0,1,2,3",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("[0-9]*/results.json"))]
    assert len(results) == 4 and all(r["status"] == "ok" for r in results)
    assert {(r["gpu_slot"]["slot"], r["gpu_slot"]["gpu"]) for r in results} <= {(0, "4"), (1, "7")}
    assert {r["gpu_slot"]["of"] for r in results} == {r["n_jobs"] for r in results} == {2}
    assert {r["threads"] for r in results} == {max((os.cpu_count() or 1) // 2, 1)}
    report = (sweep_dir / "report.md").read_text()
    assert "Runs: 4 (4 ok, 0 not ok)" in report and "| 0 1 2 3 |" in report


def test_ddp_jobs_in_a_local_sweep_are_refused_in_one_line_before_any_job(tmp_path):
    proc = _cli(
        "-m",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: trainer.devices=2: one process per job in a local sweep (-m), this one would start 2; sweep "
        "one-GPU jobs across the GPUs with hydra/launcher=gpus, or DDP jobs with hydra/launcher=slurm"
    ]
    assert not (tmp_path / "sweep").exists()


def test_processes_and_where_ddp_may_run():
    def trainer(*o):
        return compose_cfg(list(o)).trainer

    assert processes(trainer()) == 1
    assert processes(trainer("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")) == 2
    assert processes(trainer("trainer=ddp", "trainer.accelerator=cpu")) == 1  # devices=auto on a CPU: one
    assert processes(trainer("trainer.devices=[0,1]", "trainer.num_nodes=2")) == 4
    ddp = compose_cfg(["trainer=ddp", "trainer.devices=4"])
    check_sweep_placement(ddp, launcher_kind(SLURM))  # SLURM starts every rank itself
    check_sweep_placement(compose_cfg([]), launcher_kind(LOCAL))
    with pytest.raises(ConfigError, match="trainer.devices=4: one process per job in a local sweep"):
        check_sweep_placement(ddp, launcher_kind(LOCAL))


def test_a_job_context_is_resolved_once_and_frozen(monkeypatch):
    from dataclasses import FrozenInstanceError

    from trickbench import sweep

    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    job = sweep.resolve(compose_cfg(["trainer.accelerator=cpu", "trainer.devices=3"]))
    # not a sweep: one job (Hydra's basic launcher); 3 CPU ranks share the 6 cores; no launcher slot
    assert (job.multirun, job.launcher.rsplit(".", 1)[-1], job.n_jobs, job.processes, job.threads) == (
        False,
        "BasicLauncher",
        1,
        3,
        2,
    )
    assert job.gpu_slot is None and job.overrides == ("trainer.accelerator=cpu", "trainer.devices=3")
    assert sweep.resolve(compose_cfg(["threads=5"])).threads == 5
    monkeypatch.setenv("TRICKBENCH_GPU", "7")
    monkeypatch.setenv("TRICKBENCH_SLOT", "1")
    monkeypatch.setenv("TRICKBENCH_PARALLEL_JOBS", "2")
    assert sweep.resolve(compose_cfg([])).gpu_slot == {"gpu": "7", "slot": 1, "of": 2}
    with pytest.raises(FrozenInstanceError):
        job.threads = 1


# ---- the launchers' table (sweep/placement.py LAUNCHERS) ----------------------------------------------------------
KNOWN = {  # hydra/launcher option -> (starts DDP ranks, pool workers, the overrides that set its jobs at once, n_jobs)
    "basic": (False, False, [], 1),
    "joblib": (False, True, ["hydra.launcher.n_jobs=3"], 3),
    "submitit_local": (False, False, ["hydra.sweeper.max_batch_size=2"], 2),
    "gpus": (False, True, [], 4),  # its workers say how many slots (TRICKBENCH_PARALLEL_JOBS)
    "slurm": (True, False, [], 1),  # each job on its own allocation
}


@pytest.mark.parametrize("option", sorted(KNOWN))
def test_each_known_launcher_has_its_entry_and_its_jobs_their_share_of_the_cores(option, monkeypatch, caplog):
    from trickbench import sweep

    starts_ranks, pool_workers, overrides, n_jobs = KNOWN[option]
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    monkeypatch.setenv("TRICKBENCH_PARALLEL_JOBS", "4")
    cfg = compose_cfg([f"hydra/launcher={option}", *overrides])
    job = sweep.resolve(cfg)
    assert job.launcher in LAUNCHERS and job.kind.option == option
    assert (job.kind.starts_ranks, job.kind.pool_workers) == (starts_ranks, pool_workers)
    assert (job.n_jobs, job.threads) == (n_jobs, 12 // n_jobs)
    assert not caplog.records  # a known launcher: no warning


def test_joblib_negative_n_jobs_counts_back_from_the_cores(monkeypatch):
    from trickbench import sweep

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert sweep.resolve(compose_cfg(["hydra/launcher=joblib", "hydra.launcher.n_jobs=-2"])).n_jobs == 7


def test_an_unknown_launcher_warns_once_in_one_line_naming_the_table(caplog):
    target = "somewhere.else.RayLikeLauncher"
    with caplog.at_level(logging.WARNING, logger="trickbench.sweep.placement"):
        kind = launcher_kind(target)
        assert launcher_kind(target) == kind  # asked by every job: said once
    (said,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in said and said.startswith(f"launcher {target} is not in trickbench.sweep.placement.LAUNCHERS")
    assert (kind.jobs_at_once(None), kind.starts_ranks, kind.pool_workers) == (1, False, False)


def test_a_parallel_launcher_named_in_the_table_gets_its_share_whatever_its_name(monkeypatch):
    from trickbench import sweep

    target = "acme.pool.WorkerPool"  # no "joblib", no "LocalLauncher" in its name
    monkeypatch.setitem(LAUNCHERS, target, LauncherKind("pool", lambda hc: int(hc.launcher.workers)))
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    job = sweep.resolve(compose_cfg([f"hydra.launcher._target_={target}", "+hydra.launcher.workers=6"]))
    assert (job.kind.option, job.n_jobs, job.threads) == ("pool", 6, 2)


def test_a_cluster_launcher_may_start_ddp_ranks_per_its_entry(monkeypatch, capsys):
    target = "acme.cluster.PBSLauncher"  # no "SlurmLauncher" in its name
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4"]

    def sweep_start(overrides):  # the Hydra callback, as before a sweep's first job
        config = compose_cfg(overrides)
        OmegaConf.update(config, "hydra.launcher._target_", target, force_add=True)
        SweepPlacementCheck().on_multirun_start(config)

    with pytest.raises(SystemExit):  # not in the table: a local sweep, its ranks refused
        sweep_start(ddp)
    assert "one process per job in each job of hydra/launcher=PBSLauncher" in capsys.readouterr().err
    monkeypatch.setitem(LAUNCHERS, target, LauncherKind("pbs", starts_ranks=True))
    sweep_start(ddp)  # it starts every rank itself
    with pytest.raises(SystemExit):  # and sizes the allocation: a number, not auto
        sweep_start([*ddp, "trainer.devices=auto"])
    assert "trainer.devices='auto': an integer >= 1 under hydra/launcher=pbs" in capsys.readouterr().err


def test_only_the_table_names_launchers():
    """No module but sweep/placement.py tells launchers apart by their names (strings in code, docstrings aside)."""
    naming = []
    for path in (ROOT / "src" / "trickbench").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(node) is not None
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if any(name in node.value for name in ("Launcher", "joblib", "submitit")):
                    naming.append(f"{path.relative_to(ROOT)}: {node.value[:60]!r}")
    assert all(n.startswith("src/trickbench/sweep/placement.py") for n in naming), naming
