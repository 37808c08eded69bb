"""hydra/launcher=gpus: a local sweep's jobs in parallel, each pinned to one GPU, `jobs_per_gpu` at a time per GPU.

Every worker process takes one slot (a GPU and a place on it) for its whole life, before CUDA starts in it, by
locking a slot file in the sweep folder; there are as many workers as slots, so jobs running at once never share
a slot. A job's results.json names its GPU and slot. (Lives under hydra_plugins: Hydra instantiates launchers
from that package only.)"""

import logging
import os
import time
from pathlib import Path
from typing import Sequence

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from trickbench.errors import exit_with

log = logging.getLogger(__name__)
CPU_LAUNCHERS = "hydra/launcher=joblib (jobs in parallel on the CPU) or the default launcher (one after another)"


class GPULauncher(Launcher):
    def __init__(self, devices=None, jobs_per_gpu: int = 1) -> None:
        self.devices, self.jobs_per_gpu = devices, jobs_per_gpu
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib import Parallel, delayed  # the worker pool (loky): pickles Hydra's task function like joblib's

        try:
            slots = slot_devices(self.devices, self.jobs_per_gpu)
        except ValueError as e:
            exit_with(e)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "Launching %d jobs on GPUs %s, %d at a time each: %s",
            len(job_overrides),
            sorted(set(slots), key=slots.index),
            self.jobs_per_gpu,
            sweep_dir,
        )
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        runs = Parallel(n_jobs=len(slots), backend="loky")(
            delayed(_run_on_slot)(
                sweep_dir / ".gpu-slots",
                slots,
                initial_job_idx + idx,
                list(overrides),
                self.hydra_context,
                self.config,
                self.task_function,
                state,
            )
            for idx, overrides in enumerate(job_overrides)
        )
        return list(runs)


def slot_devices(devices, jobs_per_gpu) -> list[str]:
    """The GPU of each slot: every device jobs_per_gpu times. devices=null: every GPU this machine has."""
    if isinstance(jobs_per_gpu, bool) or not isinstance(jobs_per_gpu, int) or jobs_per_gpu < 1:
        raise ValueError(f"hydra.launcher.jobs_per_gpu={jobs_per_gpu!r}: an integer >= 1")
    if devices is None:
        import torch  # here: only this launcher needs it in the sweep's own process

        devices = list(range(torch.cuda.device_count()))
        if not devices:
            raise ValueError(f"hydra/launcher=gpus: this machine has no GPU; on a CPU use {CPU_LAUNCHERS}")
    if OmegaConf.is_config(devices):
        devices = OmegaConf.to_container(devices)
    if not isinstance(devices, list) or not devices or len(set(map(str, devices))) != len(devices):
        raise ValueError(f"hydra.launcher.devices={devices!r}: null (every GPU) or a list of distinct GPU indices")
    return [str(d) for d in devices for _ in range(jobs_per_gpu)]


_held: dict = {}  # this worker's slot: {"dir": lock folder, "slot": index, "lock": FileLock held for life}


def take_slot(lock_dir: Path, n_slots: int, wait_s: float = 0.1) -> int:
    """This process's slot: the first free one, locked until the process exits (the lock goes with it)."""
    if _held.get("dir") != lock_dir:
        lock_dir.mkdir(parents=True, exist_ok=True)
        while "slot" not in _held or _held.get("dir") != lock_dir:
            for i in range(n_slots):
                lock = FileLock(lock_dir / f"slot-{i}.lock")
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                _held.update(dir=lock_dir, slot=i, lock=lock)
                break
            else:
                time.sleep(wait_s)  # a worker that is shutting down still holds its slot
    return _held["slot"]


def _run_on_slot(lock_dir, slots, idx, overrides, hydra_context, config, task_function, singleton_state):
    slot = take_slot(lock_dir, len(slots))
    os.environ["CUDA_VISIBLE_DEVICES"] = slots[slot]  # before CUDA starts in this worker: it sees one GPU
    os.environ.update(TRICKBENCH_GPU=slots[slot], TRICKBENCH_SLOT=str(slot), TRICKBENCH_PARALLEL_JOBS=str(len(slots)))
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
