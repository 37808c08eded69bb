"""One training run: config -> datamodule, model, module, trainer -> fit, test the best checkpoint,
results.json. train.py at the repo root is the Hydra entry point."""

import logging
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trickbench.config import validate
from trickbench.errors import TrickbenchError
from trickbench.models import build_model, count_params
from trickbench.module import TrickModule
from trickbench.results import device_name, git_info, versions, write_json

log = logging.getLogger(__name__)


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _callbacks(cfg: DictConfig) -> list:
    wanted = {k: c for k, c in (cfg.get("callbacks") or {}).items() if c is not None}
    if not cfg.trainer.get("enable_progress_bar", True):
        wanted.pop("progress_bar", None)
    return [instantiate(c) for c in wanted.values()]


def run(cfg: DictConfig) -> dict:
    """Train and test one configuration; returns what it writes to <output_dir>/results.json."""
    started = time.time()
    validate(cfg)
    out_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    dm = instantiate(cfg.data, augment=cfg.augment, seed=cfg.seed)
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, dm.shape, dm.num_classes)
    module = TrickModule(net, OmegaConf.to_container(cfg, resolve=True), dm.num_classes)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=_callbacks(cfg), logger=loggers or False)

    fit_start = time.time()
    trainer.fit(module, dm)
    fit_seconds = time.time() - fit_start
    last = {k: float(v) for k, v in trainer.callback_metrics.items()}  # before test() replaces them
    test = {}
    if cfg.get("test_after_fit", True):
        best = "best" if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path else None
        test = trainer.test(module, dm, ckpt_path=best, verbose=False)[0]

    results = _results(cfg, trainer, module, dm, last, test, started, fit_seconds)
    if not trainer.is_global_zero:  # DDP: every rank runs this function; one writes
        return results
    write_json(out_dir / "results.json", results)
    _log_hparams(trainer, cfg, results)
    acc = results["test"]["acc"]
    log.info(
        "test acc %s | results: %s | curves: tensorboard --logdir %s",
        "n/a" if acc is None else f"{acc:.4f}",
        out_dir / "results.json",
        Path(cfg.paths.log_dir) / cfg.task_name,
    )
    return results


def _results(
    cfg: DictConfig, trainer, module: TrickModule, dm, last: dict, test: dict, started: float, fit_seconds: float
) -> dict:
    """The results.json of ../shared/DESIGN.md, plus normalization stats and checkpoint paths."""
    ckpt = trainer.checkpoint_callback
    best_score = ckpt.best_model_score if ckpt is not None else None
    return {
        "status": "ok",
        "error": None,
        "overrides": _overrides(),
        "seed": cfg.seed,
        "split_seed": cfg.data.split_seed,
        "test": {"acc": test.get("test/acc"), "loss": test.get("test/loss")},
        "val": {"acc_best": None if best_score is None else float(best_score), "acc_last": last.get("val/acc")},
        "train": {"acc_last": last.get("train/acc"), "loss_last": last.get("train/loss")},
        "epochs": trainer.current_epoch,
        "wall_time_s": round(time.time() - started, 2),
        "params": count_params(module.net),
        "dataset": dm.info["dataset"],
        "device": device_name(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        "threads": torch.get_num_threads(),
        "n_jobs": 1,
        "images_per_s": round(module.train_images * trainer.world_size / fit_seconds, 1),
        "source_sha256": dm.info["source_sha256"],
        "normalization": dm.info["normalization"],
        "checkpoints": {"best": ckpt.best_model_path if ckpt else None, "last": ckpt.last_model_path if ckpt else None},
        "git": git_info(),
        "versions": versions(),
    }


def _log_hparams(trainer, cfg: DictConfig, results: dict) -> None:
    """The config once, with the final metrics, so TensorBoard's HPARAMS tab compares runs."""
    params = OmegaConf.to_container(cfg, resolve=True)
    for key in ("logger", "callbacks", "paths", "hydra"):
        params.pop(key, None)
    metrics = {"hp/test_acc": results["test"]["acc"], "hp/val_acc_best": results["val"]["acc_best"]}
    for lg in trainer.loggers:
        lg.log_hyperparams(params, {k: v for k, v in metrics.items() if v is not None})
        lg.finalize("success")


def main_task(cfg: DictConfig) -> dict:
    """Hydra task: run, and on a bad value print its one-line error and exit 2, recording the failure."""
    try:
        return run(cfg)
    except TrickbenchError as e:
        _record_failure(cfg, e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        _record_failure(cfg, e)
        raise


def _record_failure(cfg: DictConfig, error: Exception) -> None:
    try:
        out = Path(cfg.paths.output_dir)
    except Exception:  # noqa: BLE001  (no output dir to write to)
        return
    line = (str(error).splitlines() or [type(error).__name__])[0]
    write_json(
        out / "results.json",
        {
            "status": "failed",
            "error": line,
            "overrides": _overrides(),
            "seed": cfg.get("seed"),
            "git": git_info(),
            "versions": versions(),
        },
    )
