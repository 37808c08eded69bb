"""What a run writes about itself: its results.json (../shared/DESIGN.md's contract), the config and final metrics for
TensorBoard's HPARAMS tab, and the one-line record of a failed run."""

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from trickbench import speed, sweep
from trickbench.callbacks import EpochTimer
from trickbench.cli import LAST_CKPT
from trickbench.errors import ConfigError, first_line
from trickbench.models import count_params
from trickbench.results import device_name, git_info, versions, write_json
from trickbench.runfolder import FolderInUse


def run_results(
    cfg: DictConfig,
    trainer,
    module,
    dm,
    last: dict,
    test: dict,
    started: float,
    fit_seconds: float,
    n_jobs: int,
    settings: dict,
) -> dict:
    """The results.json of ../shared/DESIGN.md, plus normalization stats and checkpoint paths."""
    ckpt = trainer.checkpoint_callback
    best_score = ckpt.best_model_score if ckpt is not None else None
    timing = {"fit_s": round(fit_seconds, 3), **_timing(trainer)}
    per_rank = timing.get("train_images_per_s")
    return {
        "status": "ok",
        "error": None,
        "overrides": overrides(cfg),
        "seed": cfg.seed,
        "split_seed": cfg.data.split_seed,
        "test": {"acc": test.get("test/acc"), "loss": test.get("test/loss")},
        "val": {"acc_best": None if best_score is None else float(best_score), "acc_last": last.get("val/acc")},
        "train": {"acc_last": last.get("train/acc"), "loss_last": last.get("train/loss")},
        "epochs": trainer.current_epoch,
        "lr": trainer.optimizers[0].defaults["lr"],  # after optimizer.scale_lr_to_batch
        "wall_time_s": round(time.time() - started, 2),
        "params": count_params(module.net),
        "dataset": dm.info["dataset"],
        "device": device_name(trainer.strategy.root_device),
        "gpu_slot": sweep.gpu_slot(),  # hydra/launcher=gpus: the machine's GPU index and the job's slot
        "precision": str(trainer.precision),
        "threads": torch.get_num_threads(),
        "n_jobs": n_jobs,
        "speed": {**settings, "data_device": dm.info.get("data_device"), **_compile_time(trainer)},
        "timing": timing,
        # training throughput (validation and checkpoints excluded), all ranks together
        "images_per_s": per_rank and round(per_rank * trainer.world_size, 1),
        "source_sha256": dm.info["source_sha256"],
        "normalization": dm.info["normalization"],
        "checkpoints": {
            "best": ckpt.best_model_path if ckpt else None,
            "last": str(last_ckpt) if (last_ckpt := Path(cfg.paths.output_dir) / LAST_CKPT).exists() else None,
        },
        "git": git_info(),
        "versions": versions(),
    }


def _timing(trainer) -> dict:
    timer = next((c for c in trainer.callbacks if isinstance(c, EpochTimer)), None)
    return timer.summary() if timer else {}


def _compile_time(trainer) -> dict:
    clock = next((c for c in trainer.callbacks if isinstance(c, speed.CompileClock)), None)
    return {"compile_first_batch_s": clock.first_batch_s} if clock else {}


def log_hparams(trainer, cfg: DictConfig, results: dict) -> None:
    """The config once, with the final metrics, so TensorBoard's HPARAMS tab compares runs."""
    params = OmegaConf.to_container(cfg, resolve=True)
    for key in ("logger", "callbacks", "paths", "hydra"):
        params.pop(key, None)
    metrics = {"hp/test_acc": results["test"]["acc"], "hp/val_acc_best": results["val"]["acc_best"]}
    for lg in trainer.loggers:
        lg.log_hyperparams(params, {k: v for k, v in metrics.items() if v is not None})
        lg.finalize("success")


def overrides(cfg: DictConfig) -> list[str]:
    """The command's overrides; a resumed run keeps those of the run it continues."""
    saved = Path(cfg.paths.output_dir) / ".hydra" / "overrides.yaml"
    if cfg.get("resume") and not sweep.is_multirun() and saved.exists():
        return list(OmegaConf.load(saved))
    return sweep.job_overrides()


def record_failure(cfg: DictConfig, error: Exception, status: str) -> None:
    if not sweep.is_rank_zero():  # DDP: every rank fails alike; one writes
        return
    if isinstance(error, ConfigError) and error.key == "resume":  # nothing ran in the folder it names
        return
    if isinstance(error, FolderInUse):  # the folder is another live process's
        return
    try:
        out, job_overrides = Path(cfg.paths.output_dir), overrides(cfg)
    except Exception:  # noqa: BLE001  (no output dir to write to)
        return
    if not out.is_dir():  # removed while the run ran: not recreated for a record
        return
    try:
        _write_failure(out, job_overrides, cfg, error, status)
    except OSError:  # the disk that failed the run (full, read-only) fails its record too; the one line says why
        pass


def _write_failure(out: Path, job_overrides: list[str], cfg: DictConfig, error: Exception, status: str) -> None:
    write_json(
        out / "results.json",
        {
            "status": status,
            "error": first_line(error),
            "overrides": job_overrides,
            "seed": cfg.get("seed"),
            "git": git_info(),
            "versions": versions(),
        },
    )
