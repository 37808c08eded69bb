"""Where a sweep's jobs may start processes: how many a trainer config starts, how many share this machine's
cores, and the refusal of DDP inside a local sweep (its ranks would re-run the whole sweep). Importable without
torch: the Hydra callback runs before any job."""

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trickbench.errors import ConfigError, exit_with, is_int


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
