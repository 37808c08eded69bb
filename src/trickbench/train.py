"""One training run: config -> datamodule, model, module, trainer -> fit, test the best checkpoint,
results.json. train.py at the repo root is the Hydra entry point."""

import logging
import os
import sys
import time
from pathlib import Path

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from trickbench import errors, speed, sweep, tuning
from trickbench.callbacks import AtomicCheckpointIO, CheckpointOnSigterm, CompileClock
from trickbench.checkpoints import (
    LAST_CKPT,
    LastCheckpoint,
    continued_precision,
    last_checkpoint,
    remove_partial_saves,
    resumed_config,
)
from trickbench.config.command_choices import check_preset_sweep
from trickbench.config.validate import validate
from trickbench.errors import ConfigError, Diverged, FileFault, TrickbenchError, with_status
from trickbench.models import build_model
from trickbench.module import TrickModule, build_module
from trickbench.results import log_hparams, record_failure, run_results, write_json
from trickbench.sweep import search
from trickbench.sweep.context import finished, job_overrides
from trickbench.sweep.folders import FolderLock
from trickbench.sweep.placement import check_sweep_placement
from trickbench.tricks import StepTrick

log = logging.getLogger(__name__)


def _callbacks(cfg: DictConfig) -> list:
    wanted = {k: c for k, c in (cfg.get("callbacks") or {}).items() if c is not None}
    if not cfg.trainer.get("enable_progress_bar", True):
        wanted.pop("progress_bar", None)
    return [instantiate(c) for c in wanted.values()]


def build_step_tricks(cfg: DictConfig) -> list[StepTrick]:
    """conf `step:`, in order (tricks/); a trick its own keys switch off (mixup/CutMix at alpha 0) is left out."""
    tricks = []
    for name, node in (cfg.get("step") or {}).items():
        if node is None:
            continue
        if "_target_" not in node:
            raise ConfigError(
                f"step.{name}", OmegaConf.to_container(node), "a node with a _target_ (a StepTrick class)"
            )
        try:
            tricks.append(instantiate(node))
        except InstantiationException as e:  # Hydra wraps a trick's one-line error into a traceback
            if isinstance(e.__cause__, TrickbenchError):
                raise e.__cause__ from None
            raise
    return [t for t in tricks if getattr(t, "active", True)]


def _plugins() -> list:
    # under SLURM the submitit launcher requeues (conf/hydra/launcher/slurm.yaml); Lightning's requeue would double it
    slurm = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    return [AtomicCheckpointIO(), *slurm]


def run(cfg: DictConfig, started: sweep.Launch | None = None, last: LastCheckpoint | None = None) -> dict:
    """Train and test one configuration; returns what it writes to <output_dir>/results.json. The run is resolved
    here, once, and passed down: the job (started: sweep.launch(), when main_task asked already), the checkpoint it
    continues from (last: when main_task read it for resume=; else the folder's, read here) and the speed settings."""
    began = time.time()
    validate(cfg)
    job = sweep.resolve(cfg, started)
    if job.multirun:  # a job's own overrides may ask for DDP too
        check_sweep_placement(cfg, job.kind)
    else:
        search.check_single_run(cfg)  # hparams_search=... without -m
        check_preset_sweep()  # experiment=ablation/norms without -m
    out_dir = Path(cfg.paths.output_dir)
    done = finished(out_dir, list(job.overrides), job.multirun)
    if done is not None and last is not None and cfg.trainer.max_epochs > last.config["trainer"]["max_epochs"]:
        done = None  # resume= of a finished run with a longer trainer.max_epochs (allowed by resume_changes) trains on
    if done is not None:
        log.info("skipped: %s already says status ok", out_dir / "results.json")
        return done
    for stale in remove_partial_saves(out_dir / LAST_CKPT.parent):
        log.info("removed %s, a checkpoint save the run's kill interrupted", stale)
    last = last or last_checkpoint(out_dir)
    settings = speed.resolve(cfg, continued_precision(last, cfg.trainer.get("precision")))
    with open_dict(cfg):  # the checkpoints' config records what ran, for resume= and eval.py on another machine
        cfg.trainer.precision = settings["precision"]
    return _train(cfg, job, settings, last, began)


def _train(cfg: DictConfig, job: sweep.JobContext, settings: dict, last: LastCheckpoint | None, began: float) -> dict:
    out_dir = Path(cfg.paths.output_dir)
    speed.reset_backend_flags(job.threads)
    speed.apply_backend_flags(settings)
    step_tricks = build_step_tricks(cfg)  # a trick's missing value (distill's teacher) fails before any data is read
    dm = instantiate(cfg.data, augment=cfg.augment, seed=cfg.seed)
    dm.prepare_data()  # bad data fails here, before the model, the Trainer and their start-up lines
    dm.check_ranks(job.processes)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    module, trainer = _build(cfg, dm, settings, step_tricks, loggers)
    if last is not None:  # a killed or requeued run, or an unfinished job of a resumed sweep
        log.info("resuming from %s", last.path)
    else:
        found = tuning.maybe_lr_find(cfg, trainer, module, dm)  # tune=lr_find
        if found.stop is not None:
            return found.stop
        if found.lr is not None:  # tune.apply=true: the run optimizer.lr=<found> would have been, from its start
            cfg.optimizer.lr = found.lr
            module, trainer = _build(cfg, dm, settings, build_step_tricks(cfg), loggers)
    fit_start = time.time()
    trainer.fit(module, dm, ckpt_path=last.path if last else None)
    fit_seconds = time.time() - fit_start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}  # before test() replaces them
    passes = _test_passes(cfg, trainer, module, dm)
    results = run_results(cfg, trainer, module, dm, metrics, passes, began, fit_seconds, job, settings)
    if not trainer.is_global_zero:  # DDP: every rank runs this function; one writes
        return results
    write_json(out_dir / "results.json", results)
    log_hparams(trainer, cfg, results)
    acc = results["test"]["acc"]
    log.info(
        "test acc %s | results: %s | curves: tensorboard --logdir %s",
        "n/a" if acc is None else f"{acc:.4f}",
        out_dir / "results.json",
        Path(cfg.paths.log_dir) / cfg.task_name,
    )
    return results


def _test_passes(cfg: DictConfig, trainer: L.Trainer, module: TrickModule, dm) -> dict:
    """The Trainer.test passes after fit, by their results.json key: test (the best val checkpoint), test_last and
    train_clean (both last.ckpt, the last epoch's weights)."""
    passes = {}
    if cfg.get("test_after_fit", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
        passes["test"] = trainer.test(module, dm, ckpt_path=best or None, verbose=False)[0]
    last_ckpt = Path(cfg.paths.output_dir) / LAST_CKPT
    if not last_ckpt.exists():
        return passes
    if cfg.get("test_last"):  # the last epoch's weights too: no choice made on a val split
        passes["test_last"] = trainer.test(module, dm, ckpt_path=str(last_ckpt), verbose=False)[0]
    if cfg.get("train_clean"):  # how well those weights fit the training images, without augmentation or dropout
        start = time.time()
        with dm.testing_on("train"), module.testing_as("train_clean"):
            passes["train_clean"] = trainer.test(module, dm, ckpt_path=str(last_ckpt), verbose=False)[0]
        passes["train_clean"]["seconds"] = time.time() - start
    return passes


def _build(cfg: DictConfig, dm, settings: dict, step_tricks: list, loggers: list) -> tuple[TrickModule, L.Trainer]:
    """The module and the Trainer with its callbacks, from the seed on: built again from the same seed (same
    initial weights) when lr_find changed optimizer.lr."""
    L.seed_everything(cfg.seed, workers=True)
    net = build_model(cfg.model, cfg.activation, cfg.norm, cfg.init, dm.shape, dm.num_classes)
    _init_from_data(net, dm)
    net = speed.prepare_model(net, settings)
    module = build_module(cfg, net, dm.num_classes, step_tricks)
    callbacks = _callbacks(cfg) + step_tricks + ([CompileClock()] if settings["compile"] else [])
    trainer = instantiate(
        cfg.trainer,
        precision=settings["precision"],
        benchmark=settings["benchmark"],
        sync_batchnorm=settings["sync_batchnorm"],
        callbacks=callbacks,
        logger=loggers or False,
        plugins=_plugins(),
    )
    return module, trainer


def _init_from_data(net, dm) -> None:
    """A model with a data-dependent init (speednet's patch whitening) gets normalized training images."""
    if hasattr(net, "init_from_data"):
        dm.setup("fit")
        net.init_from_data(dm.transform(dm.train_set.x[:5000], train=False))


def main_task(cfg: DictConfig) -> float:
    """Hydra task; returns the run's best val acc, what a search (hparams_search=...) optimizes.
    One run: a bad value prints its one-line error and exits 2 (3 when the loss diverged).
    In a sweep (-m) every failure is recorded in the job's results.json, returns search.BAD_SCORE and the sweep
    goes on; the sweep report callback then exits non-zero naming the failed jobs (a search: only if none is ok)."""
    errors.thread_os_errors_in_one_line()
    started = sweep.launch()  # once: the job's context, failures and stops all read it
    resume = bool(cfg.get("resume")) and not started.multirun
    folder, lock = Path(cfg.resume if resume else cfg.paths.output_dir), None
    try:
        if started.rank_zero:  # DDP's other ranks are this run's own processes
            lock = FolderLock(folder, "resume" if resume else "hydra.run.dir")
        last = None
        if resume:
            cfg, last = resumed_config(cfg, job_overrides())
        return search.score(run(cfg, started, last))
    except OSError as e:  # a full disk, a read-only or removed folder: the user's to fix, said in one line
        return _failed(cfg, FileFault(e, folder) if FileFault.applies(e, folder) else e, started)
    except SIGTERMException:  # SIGTERM, or Ctrl-C while training (callbacks.CheckpointOnSigterm)
        _stopped(CheckpointOnSigterm.stopped_by or "SIGTERM", cfg.paths.output_dir, started)
    except (KeyboardInterrupt, SystemExit) as e:
        # Ctrl-C outside training: Lightning's handler (test, validate) ends in sys.exit(1)
        if isinstance(e, SystemExit) and not isinstance(e.__context__, KeyboardInterrupt):
            raise
        _stopped("Ctrl-C", folder, started)
    except Exception as e:
        return _failed(cfg, e, started)
    finally:
        if lock is not None:
            lock.release()


def _stopped(by: str, folder, started: sweep.Launch) -> None:
    code = 143 if by == "SIGTERM" else 130  # 128 + the signal, as if it had killed the process
    if started.multirun:
        print(f"job {Path(folder).name} stopped by {by}", file=sys.stderr)  # the sweep's parent says how to go on
        if started.kind.pool_workers:  # a pool's worker process: loky would keep it waiting for a dead parent
            sys.stderr.flush()
            os._exit(code)
    elif started.rank_zero:  # on stderr, like the one-line errors
        print(f"stopped by {by}; checkpoints/last.ckpt holds the progress: resume={folder}", file=sys.stderr)
    sys.exit(code)


def _failed(cfg: DictConfig, e: Exception, started: sweep.Launch) -> float:
    """Records the failure; in a sweep the sweep goes on (BAD_SCORE), else the one line and exit 2 (3: diverged)."""
    status = "diverged" if isinstance(e, Diverged) else "failed"
    record_failure(cfg, e, status, started)
    if started.multirun:
        log.error("job %s", with_status(status, e), exc_info=not isinstance(e, TrickbenchError))
        return search.BAD_SCORE
    if isinstance(e, TrickbenchError):
        if started.rank_zero:  # DDP: every rank fails alike; one says so
            print(f"error: {e}", file=sys.stderr)
        sys.exit(3 if status == "diverged" else 2)
    raise e
