"""Where one job runs, resolved once. launch(): how this process was started, known before its config is read (a
job of a sweep or not, DDP's rank 0 or another rank, by which launcher: its entry in placement.LAUNCHERS).
resolve(cfg, launch): the JobContext, adding how many jobs share the machine (n_jobs) and so its torch threads, how
many processes it starts, the GPU slot a launcher gave it, and the command's overrides; train.main_task resolves
both once and passes them down to what records the run. Also whether the job's folder already holds a finished
result (resume=<folder>). Importable without torch: train.py checks the command line first."""

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, is_int
from trickbench.rules import Rule, integer, optional
from trickbench.sweep.placement import LauncherKind, cpu_ranks, launcher_kind, processes

RULES = [Rule("threads", optional(integer(1)), "null (cores / parallel jobs) or an integer >= 1")]
# Overrides that say where or how a job runs, not what it trains: ignored when matching and grouping jobs. The paths
# of the logs and of a dataset's files and cache (paths.*, scale.sources.*, data.source, data.root) are: they differ
# between machines, and records restored on another machine must resume (report/records.py --restore); results.json
# names the dataset.
PLACEMENT_KEYS = ("resume", "hydra.", "threads", "paths.", "scale.sources.", "data.source=", "data.root=")


@dataclass(frozen=True)
class Launch:
    """How this process was started: what is known of a job before its config is read."""

    multirun: bool  # a job of a sweep (-m)
    rank_zero: bool  # DDP's global rank 0, or no DDP at all: the process that writes the run's files
    launcher: str  # Hydra's launcher _target_ ("" when Hydra is not running)
    kind: LauncherKind  # its entry in placement.LAUNCHERS


@dataclass(frozen=True)
class JobContext(Launch):
    n_jobs: int  # jobs of this sweep running at once on this machine (1 outside a parallel launcher)
    threads: int  # torch threads of this job's process (each CPU rank's)
    processes: int  # processes the run starts: trainer.devices x trainer.num_nodes
    gpu_slot: dict | None  # hydra/launcher=gpus: the machine's GPU index, the job's slot and how many slots
    overrides: tuple[str, ...]  # the command's overrides; a resumed run keeps those of the run it continues


def launch() -> Launch:
    """How this process was started, from Hydra and the launchers' variables: once, at the start of a job."""
    target = str(HydraConfig.get().launcher.get("_target_", "")) if HydraConfig.initialized() else ""
    return Launch(is_multirun(), is_rank_zero(), target, launcher_kind(target))


def resolve(cfg: DictConfig, started: Launch | None = None) -> JobContext:
    """The job's context, once per run (cfg: the validated run config; started: launch(), when already asked)."""
    started = started or launch()
    n_jobs = parallel_jobs(started.kind)
    return JobContext(
        **{f.name: getattr(started, f.name) for f in fields(Launch)},
        n_jobs=n_jobs,
        threads=threads_for(cfg.get("threads"), n_jobs * cpu_ranks(cfg.trainer)),
        processes=processes(cfg.trainer),
        gpu_slot=gpu_slot(),
        overrides=tuple(run_overrides(cfg, started.multirun)),
    )


def run_overrides(cfg: DictConfig, multirun: bool) -> list[str]:
    """The command's overrides; a resumed run keeps those of the run it continues."""
    if cfg.get("resume") and not multirun:
        saved = Path(cfg.paths.output_dir) / ".hydra" / "overrides.yaml"
        if saved.exists():
            return list(OmegaConf.load(saved))
    return job_overrides()


def is_rank_zero() -> bool:
    """Whether this process is DDP's global rank 0 (or no DDP process at all), from the launchers' variables."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def what_it_trains(overrides: list[str]) -> list[str]:
    """The overrides that change the trained model (drops resume=, hydra.*, threads=, the dataset's paths)."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(PLACEMENT_KEYS))


def parallel_jobs(kind: LauncherKind) -> int:
    """How many jobs of this sweep run at once on this machine (1 outside a parallel launcher)."""
    return kind.jobs_at_once(HydraConfig.get()) if HydraConfig.initialized() else 1


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


def finished(out_dir: Path, overrides: list[str], multirun: bool) -> dict | None:
    """The job's results.json when it already finished with status ok under the same overrides (resume=)."""
    path = out_dir / "results.json"
    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # half-written by a killed job: run it again
    if what_it_trains(done.get("overrides") or []) != what_it_trains(overrides):
        if not multirun:
            raise ConfigError("hydra.run.dir", str(out_dir), held_run(done, out_dir))
        raise ConfigError(
            "resume",
            str(out_dir.parent),
            f"the same sweep command; job {out_dir.name} there ran {what_it_trains(done.get('overrides') or [])}",
        )
    return done if done.get("status") == "ok" else None
