"""Where a sweep's jobs may start processes. LAUNCHERS is the one table of what the house knows about each Hydra
launcher (by its _target_): how many jobs it runs at once on this machine (so each job's share of the cores),
whether it starts every DDP rank of a job itself, and whether its jobs run in a pool's worker processes. Every other
module asks launcher_kind(); a launcher missing from the table is run as one job at a time, without DDP, after a
one-line warning. Also how many processes a trainer config starts, and the refusal of DDP where the launcher does
not start the ranks (Lightning would re-run the whole sweep per rank). Importable without torch: the Hydra callback
runs before any job."""

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, exit_with, is_int

log = logging.getLogger(__name__)


def one_at_a_time(hydra_cfg) -> int:
    return 1


def joblib_jobs(hydra_cfg) -> int:
    n = int(hydra_cfg.launcher.get("n_jobs") or 1)
    return n if n > 0 else max((os.cpu_count() or 1) + 1 + n, 1)  # joblib: -1 = all cores, -2 = all but one


def sweeper_batch(hydra_cfg) -> int:
    return int(hydra_cfg.sweeper.get("max_batch_size") or 1)  # submitit_local starts the sweeper's batch at once


def gpu_slots(hydra_cfg) -> int:
    return int(os.environ.get("TRICKBENCH_PARALLEL_JOBS", 1))  # set in each worker by hydra/launcher=gpus


@dataclass(frozen=True)
class LauncherKind:
    """What the house needs to know of a launcher; its entry in LAUNCHERS."""

    option: str  # the hydra/launcher option that selects it
    jobs_at_once: Callable[[DictConfig], int] = one_at_a_time  # (Hydra's config) -> jobs running at once here
    starts_ranks: bool = False  # starts every DDP rank of a job itself (SLURM's tasks): DDP jobs may be swept
    pool_workers: bool = False  # runs jobs in a pool's worker processes (loky), which outlive a stopped job's parent


LAUNCHERS = {
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher": LauncherKind("basic"),
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": LauncherKind(
        "joblib", joblib_jobs, pool_workers=True
    ),
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": LauncherKind(
        "submitit_local", sweeper_batch
    ),
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": LauncherKind("slurm", starts_ranks=True),
    "hydra_plugins.trickbench_launchers.gpus.GPULauncher": LauncherKind("gpus", gpu_slots, pool_workers=True),
}
NO_LAUNCHER = LAUNCHERS["hydra._internal.core_plugins.basic_launcher.BasicLauncher"]  # Hydra not running: one job
_warned: set[str] = set()  # unknown launchers already named: every job of a sweep asks


def launcher_kind(target: str) -> LauncherKind:
    """The table's entry for a launcher _target_; an unknown launcher: one job at a time, no DDP, said once."""
    if not target:
        return NO_LAUNCHER
    if target not in LAUNCHERS:
        if target not in _warned:
            _warned.add(target)
            log.warning(
                "launcher %s is not in trickbench.sweep.placement.LAUNCHERS: each job gets the threads of one job at "
                "a time and no DDP; add its entry there (docs/architecture.md, 'A new launcher')",
                target,
            )
        return LauncherKind(target.rsplit(".", 1)[-1])
    return LAUNCHERS[target]


def processes(trainer) -> int:
    """How many processes a run with this trainer config starts: Lightning's devices x num_nodes."""
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes") or 1)
    if OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        return len(devices) * nodes
    if str(devices) in ("auto", "-1"):
        if trainer.get("accelerator") == "cpu":
            return nodes
        import torch  # here: composing a config should not wait for torch

        return max(torch.cuda.device_count(), 1) * nodes
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()]) * nodes
    return (int(devices) if is_int(devices) or str(devices).isdigit() else 1) * nodes


def cpu_ranks(trainer) -> int:
    """DDP ranks that share this machine's cores (1 when the ranks run on GPUs): each gets its share of threads."""
    from trickbench.speed import on_gpu  # here: speed imports torch and Lightning; composing should not wait

    return 1 if on_gpu(trainer) else processes(trainer) // int(trainer.get("num_nodes") or 1)


def check_sweep_placement(cfg, launcher: LauncherKind) -> None:
    """DDP inside a sweep runs only under a launcher that starts every rank itself (SLURM): elsewhere Lightning
    starts the other ranks by re-running the command line, -m and all, and the sweep would run once per rank. Such a
    launcher sizes each job's allocation from trainer.devices and trainer.num_nodes (conf/hydra/launcher/slurm.yaml):
    numbers."""
    if launcher.starts_ranks:
        for key in ("trainer.devices", "trainer.num_nodes"):
            value = OmegaConf.select(cfg, key, default=1)
            if not (is_int(value) and value >= 1):
                raise ConfigError(
                    key, value, f"an integer >= 1 under hydra/launcher={launcher.option} (it allocates that many)"
                )
        return
    n = processes(cfg.trainer)
    if n > 1:
        nodes = int(cfg.trainer.get("num_nodes") or 1)
        where = "a local sweep (-m)" if launcher is NO_LAUNCHER else f"each job of hydra/launcher={launcher.option}"
        raise ConfigError(
            "trainer.devices" if nodes == 1 else "trainer.num_nodes",
            cfg.trainer.devices if nodes == 1 else nodes,
            f"one process per job in {where}, this one would start {n}; sweep one-GPU jobs across the GPUs "
            "with hydra/launcher=gpus, or DDP jobs with hydra/launcher=slurm",
        )


class SweepPlacementCheck(Callback):
    """Hydra callback: refuses a sweep whose jobs would start DDP ranks locally, or a SLURM sweep without numbers
    for its allocation, before any job starts or is submitted."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_sweep_placement(config, launcher_kind(str(config.hydra.launcher.get("_target_", ""))))
        except ConfigError as e:
            exit_with(e)
