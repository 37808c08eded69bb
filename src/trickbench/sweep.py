"""What one job needs to know about the sweep around it: how many jobs share the machine (threads, n_jobs),
whether its folder already holds a finished result (resume=<folder>), and a clean torch state per job."""

import json
import os
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, exit_with, is_int
from trickbench.rules import Rule, integer, optional

RULES = [Rule("threads", optional(integer(1)), "null (cores / parallel jobs) or an integer >= 1")]
# Overrides that say where or how a job runs, not what it trains: ignored when matching and grouping jobs.
PLACEMENT_KEYS = ("resume", "hydra.", "threads")


def _hydra_subdir(resume) -> str:
    """A resumed run keeps the .hydra/ record of the command that started it; its own goes beside."""
    return ".hydra" if resume in (None, "") else f".hydra/resumed-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def is_rank_zero() -> bool:
    """Whether this process is DDP's global rank 0 (or no DDP process at all), from the launchers' variables."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _rank_zero_file(path: str) -> str:
    """Hydra's job log: DDP's other ranks log to the console only (each would write a <job>_ddp_process_N.log)."""
    return path if is_rank_zero() else os.devnull


# conf/hydra/default.yaml: .hydra/ of a resumed run, the job log of DDP's ranks (run.dir: trickbench.runfolder)
for _name, _fn in (
    ("trickbench.hydra_subdir", _hydra_subdir),
    ("trickbench.rank_zero_file", _rank_zero_file),
):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def what_it_trains(overrides: list[str]) -> list[str]:
    """The overrides that change the trained model (drops resume=, hydra.*, threads=)."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(PLACEMENT_KEYS))


def launcher_target() -> str:
    return str(HydraConfig.get().launcher.get("_target_", "")) if HydraConfig.initialized() else ""


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (1 outside a parallel launcher)."""
    if not HydraConfig.initialized():
        return 1
    hc = HydraConfig.get()
    target = launcher_target()
    if "GPULauncher" in target:
        return int(os.environ.get("TRICKBENCH_PARALLEL_JOBS", 1))  # set by the launcher's worker
    if "joblib" in target:
        n = int(hc.launcher.get("n_jobs") or 1)
        return n if n > 0 else max(os.cpu_count() + 1 + n, 1)  # joblib: -1 = all cores, -2 = all but one
    if "LocalLauncher" in target:  # submitit_local: the sweeper's batch runs at once
        return int(hc.sweeper.get("max_batch_size") or 1)
    return 1


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


def check_sweep_placement(cfg, launcher_target: str) -> None:
    """DDP inside a sweep runs only under SLURM, which starts every rank itself: elsewhere Lightning starts the
    other ranks by re-running the command line, -m and all, and the sweep would run once per rank. Under SLURM,
    trainer.devices and trainer.num_nodes size each job's allocation (conf/hydra/launcher/slurm.yaml): numbers."""
    if "SlurmLauncher" in launcher_target:
        for key in ("trainer.devices", "trainer.num_nodes"):
            value = OmegaConf.select(cfg, key, default=1)
            if not (is_int(value) and value >= 1):
                raise ConfigError(key, value, "an integer >= 1 under hydra/launcher=slurm (SLURM allocates that many)")
        return
    n = processes(cfg.trainer)
    if n > 1:
        nodes = int(cfg.trainer.get("num_nodes") or 1)
        where = "each job of hydra/launcher=gpus" if "GPULauncher" in launcher_target else "a local sweep (-m)"
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
            check_sweep_placement(config, str(config.hydra.launcher.get("_target_", "")))
        except ConfigError as e:
            exit_with(e)


def gpu_slot() -> dict | None:
    """Where hydra/launcher=gpus ran this job: the GPU's index on the machine, the slot, and how many slots."""
    if "TRICKBENCH_GPU" not in os.environ:
        return None
    env = os.environ
    return {
        "gpu": env["TRICKBENCH_GPU"],
        "slot": int(env["TRICKBENCH_SLOT"]),
        "of": int(env["TRICKBENCH_PARALLEL_JOBS"]),
    }


def reset_torch_state(threads: int) -> None:
    """Parallel launchers reuse worker processes: undo what an earlier job may have set."""
    import torch  # here: train.py imports this module before composing, and a config error should not wait for torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False
    torch.set_float32_matmul_precision("highest")


def threads_for(requested: int | None, n_jobs: int) -> int:
    """threads=null shares the cores evenly among the jobs running at once."""
    if requested is not None:
        if not (is_int(requested) and requested >= 1):
            raise ConfigError("threads", requested, "null or an integer >= 1")
        return requested
    return max((os.cpu_count() or 1) // max(n_jobs, 1), 1)


def held_run(done: dict, out_dir) -> str:
    """What a single run's folder already holds, and the two ways on."""
    status = done.get("status")
    what = "a finished run" if status == "ok" else f"a run with status {status}"
    return (
        f"holds {what} (results.json; it trained {what_it_trains(done.get('overrides') or [])}); give this run a new "
        f"folder (another hydra.run.dir, or none for a new timestamped one), or continue that run with resume={out_dir}"
    )


def finished(out_dir: Path, overrides: list[str]) -> dict | None:
    """The job's results.json when it already finished with status ok under the same overrides (resume=)."""
    path = out_dir / "results.json"
    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # half-written by a killed job: run it again
    if what_it_trains(done.get("overrides") or []) != what_it_trains(overrides):
        if not is_multirun():
            raise ConfigError("hydra.run.dir", str(out_dir), held_run(done, out_dir))
        raise ConfigError(
            "resume",
            str(out_dir.parent),
            f"the same sweep command; job {out_dir.name} there ran {what_it_trains(done.get('overrides') or [])}",
        )
    return done if done.get("status") == "ok" else None
