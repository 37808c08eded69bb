"""What one job needs to know about the sweep around it: how many jobs share the machine (threads, n_jobs),
whether its folder already holds a finished result (resume=<folder>), and a clean torch state per job."""

import json
import os
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from trickbench.errors import ConfigError, is_int

# Overrides that say where or how a job runs, not what it trains: ignored when matching and grouping jobs.
PLACEMENT_KEYS = ("resume", "hydra.", "threads")


def _resume_or(resume, default):
    return default if resume in (None, "") else resume


def _hydra_subdir(resume) -> str:
    """A resumed run keeps the .hydra/ record of the command that started it; its own goes beside."""
    return ".hydra" if resume in (None, "") else f".hydra/resumed-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


# conf/hydra/default.yaml: run.dir / sweep.dir = ${trickbench.resume_or:${resume},<timestamped folder>}
for _name, _fn in (("trickbench.resume_or", _resume_or), ("trickbench.hydra_subdir", _hydra_subdir)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def what_it_trains(overrides: list[str]) -> list[str]:
    """The overrides that change the trained model (drops resume=, hydra.*, threads=)."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(PLACEMENT_KEYS))


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (1 outside a parallel launcher)."""
    if not HydraConfig.initialized():
        return 1
    hc = HydraConfig.get()
    target = str(hc.launcher.get("_target_", ""))
    if "joblib" in target:
        n = int(hc.launcher.get("n_jobs") or 1)
        return n if n > 0 else max(os.cpu_count() + 1 + n, 1)  # joblib: -1 = all cores, -2 = all but one
    if "LocalLauncher" in target:  # submitit_local: the sweeper's batch runs at once
        return int(hc.sweeper.get("max_batch_size") or 1)
    return 1


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
        raise ConfigError(
            "resume",
            str(out_dir.parent),
            f"the same sweep command; job {out_dir.name} there ran {what_it_trains(done.get('overrides') or [])}",
        )
    return done if done.get("status") == "ok" else None
