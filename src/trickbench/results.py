"""results.json: what each run writes about itself, its contract (Results: the keys the sweep report, the results
page and eval.py read; tests/ check a run's file against it), the provenance it records, and TensorBoard's HPARAMS
record. A failed run writes status, error, overrides, seed, git and versions only (record_failure)."""

import json
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NotRequired, TypedDict

import torch
from omegaconf import DictConfig, OmegaConf

from trickbench.callbacks.timing import CompileClock, EpochTimer
from trickbench.checkpoints import LAST_CKPT
from trickbench.errors import ConfigError, first_line
from trickbench.models import count_params
from trickbench.sweep.context import JobContext, Launch, run_overrides
from trickbench.sweep.folders import FolderInUse


class Results(TypedDict):
    """results.json of a finished run. status: ok | failed | diverged; accuracies are fractions in [0, 1]
    (None where not measured); test: the best val checkpoint's test figures (test_last, with test_last=true: the last
    epoch's weights); val.acc_best: the best epoch's val accuracy (the checkpoint monitor's), acc_last: the last's."""

    status: str
    error: str | None
    overrides: list[str]  # the command's overrides (a resumed run: those that started it)
    seed: int
    split_seed: int
    test: dict  # {"acc", "loss"}
    val: dict  # {"acc_best", "acc_last"}
    train: dict  # {"acc_last", "loss_last"}
    epochs: int  # epochs trained
    lr: float  # the optimizer's lr after optimizer.scale_lr_to_batch
    wall_time_s: float  # the whole run: validation, data loading, fit and tests
    params: int
    dataset: str  # its label: fashion_mnist, cifar10, "cifar10 (JPEG q75 copy)"
    device: str  # cpu | cuda:<name>
    gpu_slot: dict | None  # hydra/launcher=gpus: {"gpu", "slot", "of"}
    precision: str
    threads: int
    n_jobs: int  # jobs of the sweep that ran at once on the machine
    speed: dict  # speed.resolve's settings, the data device, a compile's first batch
    timing: dict  # fit_s, train_s, val_s, epoch_s (a list), train_images_per_s; train_clean_s with train_clean
    images_per_s: float | None  # training throughput, all ranks together
    source_sha256: str
    normalization: dict
    checkpoints: dict  # {"best", "last"}: paths or None
    git: dict  # {"commit", "dirty"}
    versions: dict  # package versions
    metrics_lr: str  # what metrics.csv's lr column holds: "epoch_start", the lr of each epoch's first optimizer step
    test_last: NotRequired[dict]  # with test_last=true: {"acc", "loss"} of last.ckpt, the last epoch's weights
    # with train_clean=true: {"acc", "loss"} of last.ckpt on the training split without augmentation or dropout
    train_clean: NotRequired[dict]


REPO = Path(__file__).resolve().parent


def git_info(repo: Path = REPO) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    out = {}
    for pkg in ("torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "kornia", "trickbench"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def device_name(device: torch.device) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def write_json(path: Path, data: dict) -> None:
    """Whole or not at all: a temporary file beside it, renamed; removed when the write fails (a full disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None or str(e.filename) == str(tmp):
            e.filename = str(path)
        raise


def run_results(
    cfg: DictConfig,
    trainer,
    module,
    dm,
    last: dict,
    passes: dict,
    started: float,
    fit_seconds: float,
    job: JobContext,
    settings: dict,
) -> Results:
    """What a finished run writes to results.json (the Results contract above), all of it: last, the metrics after
    fit; passes, the metrics of the test passes after it that ran (Trainer.test's), by their results.json key: test,
    test_last and train_clean (with its "seconds")."""
    ckpt = trainer.checkpoint_callback
    best_score = ckpt.best_model_score if ckpt is not None else None
    timing = {"fit_s": round(fit_seconds, 3), **_timing(trainer)}
    if "train_clean" in passes:
        timing["train_clean_s"] = round(passes["train_clean"]["seconds"], 3)
    test = passes.get("test", {})
    per_rank = timing.get("train_images_per_s")
    results: Results = {
        "status": "ok",
        "error": None,
        "overrides": list(job.overrides),
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
        "gpu_slot": job.gpu_slot,  # hydra/launcher=gpus: the machine's GPU index and the job's slot
        "precision": str(trainer.precision),
        "threads": torch.get_num_threads(),
        "n_jobs": job.n_jobs,
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
        "metrics_lr": "epoch_start",  # module.TrickModule.on_train_batch_start; older records logged the next epoch's
    }
    for key, stage in (("test_last", "test"), ("train_clean", "train_clean")):
        if key in passes:
            results[key] = {"acc": passes[key].get(f"{stage}/acc"), "loss": passes[key].get(f"{stage}/loss")}
    return results


def _timing(trainer) -> dict:
    timer = next((c for c in trainer.callbacks if isinstance(c, EpochTimer)), None)
    return timer.summary() if timer else {}


def _compile_time(trainer) -> dict:
    clock = next((c for c in trainer.callbacks if isinstance(c, CompileClock)), None)
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


def record_failure(cfg: DictConfig, error: Exception, status: str, started: Launch) -> None:
    """The results.json of a run that failed or diverged: its status, the one-line error and what it trained.
    started: how the job was launched (sweep.launch())."""
    if not started.rank_zero:  # DDP: every rank fails alike; one writes
        return
    if isinstance(error, ConfigError) and error.key == "resume":  # nothing ran in the folder it names
        return
    if isinstance(error, FolderInUse):  # the folder is another live process's
        return
    try:
        out, job_overrides = Path(cfg.paths.output_dir), run_overrides(cfg, started.multirun)
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
